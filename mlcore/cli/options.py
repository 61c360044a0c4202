"""Parsing shared by the commands of ``python -m mlcore``."""

from __future__ import annotations

from collections.abc import Sequence


def split_names(values: Sequence[str] | None) -> tuple[str, ...] | None:
    """Names given space or comma separated (``--backbones a b,c``); None when none are given."""
    if not values:
        return None
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    return tuple(names) or None
