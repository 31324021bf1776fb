"""Settings of the metrics stage (conf/metrics.yaml)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricsConfig:
    """Filled in by the metrics stage."""
