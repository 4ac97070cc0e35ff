"""Evaluation: classification metrics and efficiency (size, latency) measurements."""
