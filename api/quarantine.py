"""Quarantined landing rows of a run (schemas/lake.py QUARANTINE); personal data already masked."""

from __future__ import annotations

import datetime as dt
from typing import Any

import strawberry

from api.rows import from_row

ORDER: tuple[str, ...] = ("source_table", "row_hash")


@strawberry.type(description="A landing row the run refused, with the reason (raw_record has personal data masked).")
class QuarantineRecord:
    as_of_date: dt.date
    run_id: str
    source_table: str
    reason_code: str
    reason_detail: str
    record_key: str | None
    raw_record: str
    row_hash: str

    @classmethod
    def from_lake(cls, row: dict[str, Any]) -> QuarantineRecord:
        return from_row(cls, row)


@strawberry.input(description="Restricts the quarantined rows listed.")
class QuarantineFilter:
    source_table: str | None = None
    reason_code: str | None = None
