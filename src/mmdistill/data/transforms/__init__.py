"""Transforms: decode files into arrays and turn arrays into model-ready tensors."""

from mmdistill.data.transforms.audio import LogMel, load_audio, mel_filterbank, resample
from mmdistill.data.transforms.image import ImageTransform, load_image
from mmdistill.data.transforms.text import TextTokenizer

__all__ = [
    "ImageTransform", "LogMel", "TextTokenizer", "load_audio", "load_image", "mel_filterbank", "resample",
]
