"""Settings of the collections stage (conf/collections.yaml)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CollectionsConfig:
    """Filled in by the collections stage."""
