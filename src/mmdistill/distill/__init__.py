"""Distillation: losses that compare a student with a teacher, and the strategies that combine them.

:mod:`mmdistill.distill.losses` holds the loss families (response-based on logits, feature-based,
relation-based and cross-modal contrastive), each registered in
:data:`mmdistill.distill.registries.LOSSES`; :mod:`mmdistill.distill.strategies` owns the student,
the frozen teacher (or its cache, :mod:`mmdistill.distill.cache`) and the weighted losses.
"""
