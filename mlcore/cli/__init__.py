"""``python -m mlcore ...``: thin commands over :mod:`mlcore.pipelines` and :mod:`mlcore.features`."""

from __future__ import annotations

from mlcore.cli.app import main

__all__ = ["main"]
