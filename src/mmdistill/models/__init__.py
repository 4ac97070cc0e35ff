"""Model family: per-modality encoders, fusions, heads and the one MultimodalModel class."""
