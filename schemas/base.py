"""The building blocks of a table contract: columns with types, comments and checks."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import types as T


@dataclass(frozen=True)
class Column:
    """One column of a table contract.

    `allowed` lists the values of an enumerated column; `pii` marks personal data, which is masked
    wherever it leaves the bank's controlled tables (quarantine records, API without the claim).
    """

    name: str
    dtype: T.DataType
    comment: str
    nullable: bool = True
    allowed: tuple[str, ...] | None = None
    pii: bool = False
    non_negative: bool = False

    def field(self) -> T.StructField:
        return T.StructField(self.name, self.dtype, self.nullable, {"comment": self.comment})


@dataclass(frozen=True)
class Table:
    """A table contract: the single definition that jobs, the API, docs and BI users share."""

    name: str
    comment: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    partition_by: tuple[str, ...] = ()
    # Within a date, rows are written in this order, range-partitioned into files and cut into small
    # row groups (jobs.io.write_date), so a reader after one key -- the API's loan detail -- finds it
    # in one row group by the Parquet statistics instead of reading the whole date.
    sort_by: tuple[str, ...] = ()
    layer: str = "lake"
    # Landing tables only: an optional extract may be absent (read as empty); a required one may not.
    optional: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def schema(self) -> T.StructType:
        return T.StructType([c.field() for c in self.columns])

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name}")

    @property
    def pii_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.pii)


# Short aliases keep the table definitions readable.
STRING = T.StringType()
INT = T.IntegerType()
LONG = T.LongType()
BOOL = T.BooleanType()
DATE = T.DateType()
TIMESTAMP = T.TimestampType()
DOUBLE = T.DoubleType()
MONEY = T.DecimalType(18, 2)
RATE = T.DecimalType(9, 6)
STRINGS = T.ArrayType(STRING, containsNull=False)
COUNTS = T.MapType(STRING, LONG, valueContainsNull=False)
