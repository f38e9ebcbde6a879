"""Text in, token files out: where text comes from (sources: the hub id, local files), the token
files and their batches (tokens), and the `data prepare` verb that writes them (prepare).
"""
