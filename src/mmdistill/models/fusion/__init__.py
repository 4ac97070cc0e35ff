"""Fusions: map ``dict[str, EncoderOutput]`` plus per-row presence masks to one ``[B, dim]`` vector.

Every fusion treats a row whose ``present[m]`` is False exactly as if modality ``m`` had never been
loaded, so a model gives the same answer for an absent row and for a batch without that modality.
"""
