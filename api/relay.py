"""Relay-style connections (edges, cursors, pageInfo) over keyset-sorted in-memory tables."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import numpy as np
import strawberry

from api.context import Context
from api.fields import resolver
from api.frames import Keys, Mask
from api.store import keyset_page

T = TypeVar("T")


@strawberry.type(description="Relay page information; paging is forward only (first/after).")
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str = strawberry.field(description="Opaque keyset cursor; pass as `after` to continue.")
    node: T


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo
    _count: strawberry.Private[Callable[[], int]]

    @resolver("Rows matching the filter that the caller may see, on all pages.")
    def total_count(self) -> int:
        return self._count()


def empty_connection() -> Connection[T]:
    return Connection(
        edges=[],
        page_info=PageInfo(has_next_page=False, has_previous_page=False, start_cursor=None, end_cursor=None),
        _count=lambda: 0,
    )


def paginate(
    ctx: Context,
    kind: str,
    keys: Keys,
    n: int,
    mask: Mask | None,
    first: int | None,
    after: str | None,
    nodes: Callable[[Sequence[int]], list[T]],
) -> Connection[T]:
    """A page of `first` rows after the cursor, in key order; `nodes` builds the page's nodes."""
    size = ctx.page_size(first)
    after_key = ctx.after_key(kind, after)
    ctx.check_time()
    idx, has_next, has_previous = keyset_page(keys, n, mask, after_key, size)
    rows = [int(i) for i in idx]
    built = nodes(rows)
    edges = [Edge(cursor=ctx.cursor(kind, keys[i]), node=node) for i, node in zip(rows, built, strict=True)]

    def count() -> int:
        return n if mask is None else int(np.count_nonzero(mask))

    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=has_next,
            has_previous_page=has_previous,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        _count=count,
    )
