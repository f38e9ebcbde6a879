"""The sentencepiece character-pair BPE tokenizer: load, encode and decode (tokenizer), and
building one in a child process with progress and cancel (build).
"""
