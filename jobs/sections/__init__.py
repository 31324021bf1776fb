"""Configuration sections of the later stages, one module each (conf/<section>.yaml).

Every field has a default, so a section may be left out of the files; scalar fields can be
overridden per tier-1 branch and product (`overrides` in conf/postloan.yaml).
"""

from __future__ import annotations

from jobs.sections.collections import CollectionsConfig
from jobs.sections.inspections import InspectionsConfig
from jobs.sections.metrics import MetricsConfig

SECTIONS: dict[str, type] = {
    "inspections": InspectionsConfig,
    "collections": CollectionsConfig,
    "metrics": MetricsConfig,
}

__all__ = ["SECTIONS", "CollectionsConfig", "InspectionsConfig", "MetricsConfig"]
