"""mmdistill: distill large multimodal models into small, fast ones you can ship."""

__version__ = "0.1.0"

MODALITIES: tuple[str, ...] = ("image", "text", "audio")
"""The modalities mmdistill knows, in canonical order."""
