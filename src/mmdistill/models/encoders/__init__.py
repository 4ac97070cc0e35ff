"""Per-modality encoders: each maps one modality's batch tensor to an
:class:`~mmdistill.models.outputs.EncoderOutput` and exposes ``out_dim``."""
