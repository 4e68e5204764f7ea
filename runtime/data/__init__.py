"""Corpora, the BPE tokenizer and token shards: what a tokenize job builds."""
