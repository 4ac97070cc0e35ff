"""Data layer: the sample contract, datasets (manifest, built-in), transforms and collate."""
