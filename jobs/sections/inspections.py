"""Settings of the inspections stage (conf/inspections.yaml)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InspectionsConfig:
    """Filled in by the inspections stage."""
