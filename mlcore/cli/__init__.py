"""``python -m mlcore ...``: thin commands over :mod:`mlcore.features` (``extract``, in ``app``),
:mod:`mlcore.pipelines` and :mod:`mlcore.models` (train, evaluate, predict, cam, in ``model``)."""

from __future__ import annotations

from mlcore.cli.app import main

__all__ = ["main"]
