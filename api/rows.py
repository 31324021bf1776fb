"""Mapping lake rows onto strawberry types, and selecting rows of an in-memory table.

`from_row` fills a type's fields from the row's columns of the same (snake_case) name: ratios
(decimal in the lake) become floats, enum columns become the enum, arrays become lists. Row-level
security for every table with a `branch_path` is applied here, from the caller's scope.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from enum import Enum
from typing import Any, TypeVar, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from strawberry.types.base import StrawberryList, StrawberryOptional
from strawberry.types.enum import StrawberryEnumDefinition

from api.context import Context
from api.errors import BadInput
from api.frames import Mask
from api.lake import TableData

T = TypeVar("T")
Convert = Callable[[Any], Any]
_PLANS: dict[type, list[tuple[str, Convert]]] = {}


def _identity(value: Any) -> Any:
    return value


def _converter(annotation: Any) -> Convert:
    optional = isinstance(annotation, StrawberryOptional)
    inner = annotation.of_type if optional else annotation
    convert: Convert
    if inner is float:

        def convert(value: Any) -> Any:
            return float(value) if value is not None else None

    elif isinstance(inner, StrawberryEnumDefinition):
        enum_cls = cast(type[Enum], inner.wrapped_cls)

        def convert(value: Any) -> Any:
            return enum_cls(value) if value is not None else None

    elif isinstance(inner, StrawberryList):

        def convert(value: Any) -> Any:
            return list(value) if value is not None else []

    else:
        convert = _identity
    return convert


def from_row(cls: type[T], row: Mapping[str, Any], **values: Any) -> T:
    """An instance of strawberry type `cls` from a row; `values` set fields the row lacks."""
    plan = _PLANS.get(cls)
    if plan is None:
        definition = cls.__strawberry_definition__  # type: ignore[attr-defined]
        plan = [(f.python_name, _converter(f.type)) for f in definition.fields if f.base_resolver is None]
        _PLANS[cls] = plan
    kwargs = dict(values)
    for name, convert in plan:
        if name not in kwargs and name in row:
            kwargs[name] = convert(row[name])
    return cls(**kwargs)


def select(
    ctx: Context,
    data: TableData,
    branch_id: str | None = None,
    equals: Mapping[str, str | None] | None = None,
    extra: Sequence[Callable[[TableData], Mask]] = (),
) -> Mask | None:
    """Rows of the table the caller may see (branch_path subtree) and that match; None = all."""
    mask: Mask | None = None
    n = data.n
    names = set(data.rows.column_names)
    for scope in (ctx.caller.scope, branch_id):
        if scope is None:
            continue
        if "branch_path" not in names:
            mask = np.zeros(n, dtype=np.bool_)
            continue
        subtree = data.encoded("branch_path").subtree(scope, n)
        mask = subtree if mask is None else mask & subtree
    for name, value in (equals or {}).items():
        if value is None:
            continue
        hit = data.encoded(name).equals(value)
        mask = hit if mask is None else mask & hit
    for condition in extra:
        hit = condition(data)
        mask = hit if mask is None else mask & hit
    return mask


def listed(ctx: Context, data: TableData, mask: Mask | None, make: Callable[[dict[str, Any]], T]) -> list[T]:
    """Every matching row (in key order), for the unpaged list fields; refuses oversized answers."""
    idx = np.arange(data.n) if mask is None else np.flatnonzero(mask)
    limit = ctx.settings.limits.max_list_size
    if len(idx) > limit:
        raise BadInput(f"{len(idx)} rows match; narrow the filter (a list returns at most {limit})", rows=len(idx))
    ctx.check_time()
    return [make(r) for r in data.rows.take(idx).to_pylist()]


def date_before(column_name: str, day: dt.date) -> Callable[[TableData], Mask]:
    def condition(data: TableData) -> Mask:
        hit = pc.less_equal(data.rows.column(column_name), pa.scalar(day, pa.date32()))
        return np.asarray(pc.fill_null(hit, False), dtype=np.bool_)

    return condition


def int_range(column_name: str, low: int | None, high: int | None) -> Callable[[TableData], Mask]:
    def condition(data: TableData) -> Mask:
        values = np.asarray(data.rows.column(column_name).fill_null(-1), dtype=np.int64)
        hit = np.ones(len(values), dtype=np.bool_)
        if low is not None:
            hit &= values >= low
        if high is not None:
            hit &= values <= high
        return hit

    return condition


def money_or_zero(value: Decimal | None) -> Decimal:
    return value if value is not None else Decimal("0.00")
