"""Every table contract, landing and lake, in one place (docs and checks iterate over these)."""

from __future__ import annotations

from schemas.base import Table
from schemas.collections import COLLECTIONS_TABLES
from schemas.inspections import INSPECTION_TABLES
from schemas.lake import LAKE_TABLES_CORE
from schemas.landing import LANDING_TABLES
from schemas.metrics import METRICS_TABLES
from schemas.parties import PARTY_TABLES

LAKE_TABLES: tuple[Table, ...] = (
    *LAKE_TABLES_CORE,
    *PARTY_TABLES,
    *INSPECTION_TABLES,
    *COLLECTIONS_TABLES,
    *METRICS_TABLES,
)


def lake_table(name: str) -> Table:
    for table in LAKE_TABLES:
        if table.name == name:
            return table
    raise KeyError(f"no lake table named {name}")


def landing_table(name: str) -> Table:
    for table in LANDING_TABLES:
        if table.name == name:
            return table
    raise KeyError(f"no landing table named {name}")
