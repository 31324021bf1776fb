"""Column expressions the stages share.

They stay inside Spark's generated code: a higher-order function (`filter`, `transform`,
`array_compact`, which Spark rewrites to a `filter`) or `array_sort` is evaluated row by row by the
interpreter, and with it every expression beneath it. Measured on the classification, this did
not change its time (docs/benchmarks.md, "The classification's reasons in generated code; where
its time is"); the helper is kept as the one way to build a list of codes.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

from schemas.base import STRINGS


def sql_name(name: str) -> str:
    """A column's name quoted for SQL text (`F.expr`, `selectExpr`)."""
    return f"`{name}`"


def sql_string(text: str) -> str:
    """A string literal for SQL text."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def no_codes() -> Column:
    """An empty array<string> whose elements are typed non-null (the contracts' STRINGS)."""
    return F.array().cast(STRINGS)


def fired_codes(*codes: Column) -> Column:
    """The codes that fired, in argument order: each argument is a string column that is null when
    its rule did not fire. Typed as STRINGS (elements never null), as `array_compact` over
    `array(*codes)` would be, without its interpreted lambda."""
    # coalesce only types the one-element array as non-null: the branch runs when the code is set.
    return F.concat(
        *[F.when(code.isNotNull(), F.array(F.coalesce(code, F.lit("")))).otherwise(no_codes()) for code in codes]
    )
