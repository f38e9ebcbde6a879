"""Generation: sampling rules (sampling), KV-cache decoding (generate) and exact streaming
text deltas (streaming).
"""
