"""Masking of personal data (names, ID numbers, phones), the same in Spark and in Python.

Rules (after GB/T 35273 practice): a name keeps its first character; an ID number its first six
and last four; a phone its first three and last four. Anything shorter is masked whole.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

KEEP: dict[str, tuple[int, int]] = {"name": (1, 0), "id_number": (6, 4), "phone": (3, 4)}
DEFAULT_KEEP = (0, 0)


def mask_value(field: str, value: str | None) -> str | None:
    """Mask one value of a personal-data field (Python side, e.g. the API)."""
    if value is None:
        return None
    head, tail = KEEP.get(field, DEFAULT_KEEP)
    if len(value) <= head + tail:
        return "*" * len(value)
    return value[:head] + "*" * (len(value) - head - tail) + (value[len(value) - tail :] if tail else "")


def mask_column(field: str, column: Column) -> Column:
    """Mask a personal-data column (Spark side, e.g. quarantine records)."""
    head, tail = KEEP.get(field, DEFAULT_KEEP)
    length = F.length(column)
    stars = F.repeat(F.lit("*"), F.greatest(length - head - tail, F.lit(0)))
    kept = F.concat(
        F.substring(column, 1, head) if head else F.lit(""),
        stars,
        F.right(column, F.lit(tail)) if tail else F.lit(""),
    )
    return (
        F.when(column.isNull(), F.lit(None)).when(length <= head + tail, F.repeat(F.lit("*"), length)).otherwise(kept)
    )
