"""Helpers with no rwdet dependency, usable from every layer (as ``detectron2.utils``)."""

from .io import atomic_write, remove_stale_temporaries  # noqa: F401
