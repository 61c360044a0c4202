"""Funduscope ML core: ImageNet backbones as frozen feature extractors, fundus preprocessing,
an incremental HDF5 feature store and a small classifier head trained on top.

Sub-packages by purpose, each importing only those below it: ``cli`` -> ``pipelines`` ->
``models`` -> ``features`` -> ``data`` and ``evaluation`` (two leaves that import neither).

Never imports Django. Modules the web process imports (``features.config``,
``data.preprocessing``, ``evaluation.metrics``, ``features.store``) do not import TensorFlow
either; the others import it lazily. Command line: ``python -m mlcore --help``.
"""

from __future__ import annotations

__version__ = "0.1.0"
