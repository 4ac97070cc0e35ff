"""Compression: structured and unstructured pruning, int8 for ONNX Runtime, low-bit sweeps and QAT.

Heavy backends (torch-pruning, onnxruntime, torchao) are imported lazily inside the functions that
need them; a missing one raises :class:`mmdistill.errors.MissingDependencyError` naming the extra.
"""
