"""Funduscope ML core: ImageNet backbones as frozen feature extractors, fundus preprocessing,
an incremental HDF5 feature store and a small classifier head trained on top.

Never imports Django. Modules the web process imports (``config``, ``preprocessing``,
``metrics``, ``store``) do not import TensorFlow either; the others import it lazily.
Command line: ``python -m mlcore --help``.
"""

from __future__ import annotations

__version__ = "0.1.0"
