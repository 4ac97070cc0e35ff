"""Datasets: the JSONL/CSV manifest reader and the built-in ``mmdigits`` dataset."""
