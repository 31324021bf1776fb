"""Arrow helpers shared by the lake reader and the in-memory indexes.

Money is decimal(18,2) in the lake; in memory it is held as int64 cents (exact, and numpy can sum
it), and it leaves the API as a Decimal with two places. Strings that are filtered on are
dictionary-encoded once into int32 codes, so a filter is an integer comparison over an array.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import types as T

from schemas.base import Table

CENT = Decimal("0.01")
Mask = npt.NDArray[np.bool_]
Ints = npt.NDArray[np.int64]
Codes32 = npt.NDArray[np.int32]


def arrow_type(dtype: T.DataType) -> pa.DataType:
    """The Arrow type delta-rs reads for a contract's Spark type."""
    simple: dict[type, pa.DataType] = {
        T.StringType: pa.string(),
        T.IntegerType: pa.int32(),
        T.LongType: pa.int64(),
        T.BooleanType: pa.bool_(),
        T.DateType: pa.date32(),
        T.TimestampType: pa.timestamp("us", tz="UTC"),
        T.TimestampNTZType: pa.timestamp("us"),
        T.DoubleType: pa.float64(),
        T.FloatType: pa.float32(),
        T.ShortType: pa.int16(),
    }
    for kind, arrow in simple.items():
        if isinstance(dtype, kind):
            return arrow
    if isinstance(dtype, T.DecimalType):
        return pa.decimal128(dtype.precision, dtype.scale)
    if isinstance(dtype, T.ArrayType):
        return pa.list_(arrow_type(dtype.elementType))
    if isinstance(dtype, T.MapType):
        return pa.map_(arrow_type(dtype.keyType), arrow_type(dtype.valueType))
    if isinstance(dtype, T.StructType):
        return pa.struct([pa.field(f.name, arrow_type(f.dataType), f.nullable) for f in dtype.fields])
    raise TypeError(f"no Arrow type for {dtype.simpleString()}")


def arrow_schema(table: Table) -> pa.Schema:
    return pa.schema([pa.field(c.name, arrow_type(c.dtype), c.nullable) for c in table.columns])


def column(table: pa.Table, name: str) -> pa.Array:
    col = table.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def cents(values: pa.Array | pa.ChunkedArray) -> Ints:
    """Exact int64 cents of a decimal column (nulls as 0)."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if not pa.types.is_decimal(arr.type):
        raise TypeError(f"expected a decimal column, got {arr.type}")
    if arr.type.scale != 2 or not pa.types.is_decimal128(arr.type):
        arr = pc.cast(arr, pa.decimal128(38, 2))
    arr = pc.fill_null(arr, pa.scalar(Decimal("0.00"), arr.type))
    if len(arr) == 0:
        return np.zeros(0, dtype=np.int64)
    words = np.frombuffer(arr.buffers()[1], dtype=np.int64)
    low = words[2 * arr.offset : 2 * (arr.offset + len(arr)) : 2]
    high = words[2 * arr.offset + 1 : 2 * (arr.offset + len(arr)) : 2]
    # decimal128 is two's complement over 16 bytes: it fits in int64 when the high word is the sign.
    if not np.array_equal(high, np.where(low < 0, -1, 0)):
        raise OverflowError("a money value does not fit in int64 cents")
    return low.copy()


def money(value: int | np.integer[Any]) -> Decimal:
    return (Decimal(int(value)) / 100).quantize(CENT)


def decimal_cents(value: Decimal | None) -> int:
    return 0 if value is None else int((value * 100).to_integral_value())


def ratio(part: int, whole: int) -> float | None:
    """part / whole rounded to six places (the lake's ratio precision); None when whole is 0."""
    if whole == 0:
        return None
    return float((Decimal(part) / Decimal(whole)).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class Codes:
    """A dictionary-encoded string column: `codes[i]` indexes `values`, -1 for null."""

    values: tuple[str, ...]
    index: dict[str, int]
    codes: Codes32

    @classmethod
    def encode(cls, values: pa.Array | pa.ChunkedArray) -> Codes:
        arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        if pa.types.is_dictionary(arr.type):
            arr = arr.cast(arr.type.value_type)
        encoded = pc.dictionary_encode(arr)
        dictionary = tuple(str(v) for v in encoded.dictionary.to_pylist())
        codes = np.asarray(pc.fill_null(encoded.indices.cast(pa.int32()), -1), dtype=np.int32)
        return cls(dictionary, {v: i for i, v in enumerate(dictionary)}, codes)

    def code(self, value: str) -> int | None:
        return self.index.get(value)

    def equals(self, value: str) -> Mask:
        code = self.index.get(value)
        if code is None:
            return np.zeros(len(self.codes), dtype=np.bool_)
        hit: Mask = self.codes == code
        return hit


class Keys(Sequence[str]):
    """A sorted Arrow string column seen as a sequence, for bisecting keyset cursors."""

    def __init__(self, values: pa.Array) -> None:
        self._values = values

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, i: Any) -> Any:
        return self._values[i].as_py()

    def after(self, key: str) -> int:
        """Index of the first row whose key sorts after `key`."""
        return bisect.bisect_right(self, key)

    def find(self, key: str) -> int | None:
        i = bisect.bisect_left(self, key)
        return i if i < len(self) and self[i] == key else None


class BranchPaths:
    """branch_path (head office down to the row's branch) as one int32 code array per depth.

    The subtree of branch B is then a single comparison: the rows whose code at B's depth is B.
    """

    def __init__(self, paths: pa.Array | pa.ChunkedArray) -> None:
        arr = paths.combine_chunks() if isinstance(paths, pa.ChunkedArray) else paths
        n = len(arr)
        arr = pc.fill_null(arr, pa.scalar([], arr.type))
        lengths = np.asarray(pc.list_value_length(arr).fill_null(0), dtype=np.int64)
        depth = int(lengths.max()) if n else 0
        flat = Codes.encode(pc.list_flatten(arr)) if n else Codes((), {}, np.zeros(0, dtype=np.int32))
        starts = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=starts[1:])
        self.nodes = flat.values
        self.node_code = flat.index
        self.levels: list[Codes32] = []
        self.node_depth: dict[str, int] = {}
        for d in range(depth):
            has = lengths > d
            level = np.full(n, -1, dtype=np.int32)
            level[has] = flat.codes[starts[:-1][has] + d]
            self.levels.append(level)
            for code in np.unique(level[has]):
                self.node_depth.setdefault(self.nodes[int(code)], d)

    def subtree(self, branch_id: str, n: int) -> Mask:
        """Rows at or below `branch_id` (all False for a branch that is in no path)."""
        code = self.node_code.get(branch_id)
        depth = self.node_depth.get(branch_id)
        if code is None or depth is None:
            return np.zeros(n, dtype=np.bool_)
        hit: Mask = self.levels[depth] == code
        return hit
