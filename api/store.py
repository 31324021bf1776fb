"""In-memory indexes of one business date's loan book, built once when a run is loaded.

`LoanBook` holds loan_snapshot sorted by loan_id (the keyset order of `loans`) with every filter
column dictionary-encoded into int32 codes and balances as int64 cents, so a filtered page is a
few vectorised comparisons plus a slice. `Portfolio` holds the portfolio figures pre-aggregated
by Polars for every grouping and every branch subtree (and the whole bank), so an unfiltered
`portfolio` answer, for any caller, is a dictionary lookup; other filters are aggregated on
demand with numpy and kept in a small LRU (the date's data never changes once loaded).
"""

from __future__ import annotations

import itertools
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from api.frames import BranchPaths, Codes, Ints, Keys, Mask, cents, column
from schemas.lake import BUCKETS, NPL_CLASSES, RISK_CLASSES

GROUPINGS: tuple[str, ...] = ("HQ", "TIER1_BRANCH", "TIER2_BRANCH", "BRANCH", "PRODUCT", "CHANNEL", "OFFICER")
# group_key conventions shared with portfolio_metrics (schemas/metrics.py).
HQ_KEY = "HQ"
NONE_KEY = "NONE"
_GROUP_COLUMN = {
    "TIER1_BRANCH": "tier1_branch_id",
    "TIER2_BRANCH": "tier2_branch_id",
    "BRANCH": "branch_id",
    "PRODUCT": "product_code",
    "CHANNEL": "channel_id",
    "OFFICER": "officer_id",
}
EMPTY_SCOPE = "\x00empty"  # a scope no loan is in (another branch's subtree for a BRANCH caller)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A small thread-safe LRU of immutable results."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # Handed over empty (api/offload.py): a lock does not cross processes, and a date's answers
        # are made where it is served.
        return {"_size": self._size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._size = state["_size"]
        self._items = OrderedDict()
        self._lock = threading.Lock()

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value


def bucket_order(names: Iterable[str]) -> tuple[str, ...]:
    """M0, M1, ... M7+ in numeric order (bucket labels are configuration)."""

    def rank(name: str) -> tuple[int, int, str]:
        match = re.fullmatch(r"M(\d+)(\+?)", name)
        return (int(match.group(1)), 1 if match.group(2) else 0, name) if match else (10**6, 0, name)

    return tuple(sorted(set(names), key=rank))


@dataclass(frozen=True)
class LoanFilterValues:
    """LoanFilter / PortfolioFilter after validation (None = no condition)."""

    branch_id: str | None = None
    product_code: str | None = None
    officer_id: str | None = None
    channel_id: str | None = None
    risk_class: str | None = None
    bucket: str | None = None
    min_dpd: int | None = None
    max_dpd: int | None = None

    @property
    def beyond_branch(self) -> bool:
        """Any condition other than the branch subtree."""
        return any(
            v is not None
            for v in (
                self.product_code,
                self.officer_id,
                self.channel_id,
                self.risk_class,
                self.bucket,
                self.min_dpd,
                self.max_dpd,
            )
        )


@dataclass(frozen=True)
class Block:
    """Portfolio figures of the groups of one grouping within one scope; money in cents."""

    keys: tuple[str, ...]
    loan_count: Ints
    balance: Ints
    overdue_count: Ints
    overdue_balance: Ints
    npl_count: Ints
    npl_balance: Ints
    class_count: Ints  # [groups, classes]
    class_balance: Ints
    bucket_count: Ints  # [groups, buckets]
    bucket_balance: Ints


class LoanBook:
    """loan_snapshot of one business date, indexed for filtering, paging and aggregation."""

    def __init__(self, table: pa.Table) -> None:
        # The rows stay in the lake's order; `order` maps the keyset position to the row, so only
        # the small filter arrays are permuted (Arrow's sort_indices: measured faster than either
        # engine for this sort, and taking the whole table would cost more than the sort).
        self.table: pa.Table = table.combine_chunks()
        self.n = self.table.num_rows
        ids = column(self.table, "loan_id")
        self.order = np.asarray(pc.sort_indices(ids), dtype=np.int64) if self.n else np.zeros(0, dtype=np.int64)
        self.keys = Keys(ids.take(pa.array(self.order)))
        self.dpd = np.asarray(column(self.table, "dpd").fill_null(0), dtype=np.int32)[self.order]
        self.balance = cents(column(self.table, "outstanding_principal"))[self.order]
        self.codes: dict[str, Codes] = {}
        for name in (
            "product_code",
            "officer_id",
            "channel_id",
            "branch_id",
            "tier1_branch_id",
            "tier2_branch_id",
            "risk_class",
            "bucket",
        ):
            encoded = Codes.encode(column(self.table, name))
            self.codes[name] = Codes(encoded.values, encoded.index, encoded.codes[self.order])
        self.paths = BranchPaths(column(self.table, "branch_path"))
        self.paths.levels = [level[self.order] for level in self.paths.levels]
        self.branch_levels = self._branch_levels()
        self.ancestors = {
            node: tuple(self.paths.nodes[int(c)] for c in path[: depth + 1])
            for path in self.branch_levels.values()
            for depth, node in enumerate(self.paths.nodes[int(c)] for c in path)
        }
        self.classes: tuple[str, ...] = tuple(RISK_CLASSES)
        self.buckets: tuple[str, ...] = bucket_order([*BUCKETS, *self.codes["bucket"].values])
        self.class_index = self._remap(self.codes["risk_class"], self.classes)
        self.bucket_index = self._remap(self.codes["bucket"], self.buckets)
        self.portfolio = Portfolio(self)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.portfolio._book = weakref.ref(self)

    def rows(self, positions: Sequence[int] | npt.NDArray[np.int64]) -> list[dict[str, Any]]:
        """The snapshot rows at keyset positions, as dicts."""
        if len(positions) == 0:
            return []
        taken = self.table.take(pa.array(self.order[np.asarray(positions, dtype=np.int64)]))
        rows: list[dict[str, Any]] = taken.to_pylist()
        return rows

    # ---------------------------------------------------------------------------------------
    def _branch_levels(self) -> dict[int, tuple[int, ...]]:
        """Managing branch code -> its path's node codes (the path is a function of the branch)."""
        branch = self.codes["branch_id"].codes
        if not self.n or not self.paths.levels:
            return {}
        present, first = np.unique(branch, return_index=True)
        stacked = np.stack(self.paths.levels, axis=1)[first]
        return {int(b): tuple(int(c) for c in row if c >= 0) for b, row in zip(present, stacked, strict=True)}

    @staticmethod
    def _remap(codes: Codes, order: tuple[str, ...]) -> npt.NDArray[np.int32]:
        """Codes into `order` (-1 for values outside it)."""
        lookup = np.array([order.index(v) if v in order else -1 for v in codes.values] + [-1], dtype=np.int32)
        return lookup[codes.codes]

    def group_codes(self, grouping: str) -> tuple[tuple[str, ...], npt.NDArray[np.int32]]:
        """Group keys of a grouping and each loan's index into them (null values -> NONE)."""
        if grouping == "HQ":
            return (HQ_KEY,), np.zeros(self.n, dtype=np.int32)
        codes = self.codes[_GROUP_COLUMN[grouping]]
        keys = codes.values
        if (codes.codes < 0).any():
            keys = (*keys, NONE_KEY) if NONE_KEY not in codes.index else keys
            none = keys.index(NONE_KEY)
            return keys, np.where(codes.codes < 0, none, codes.codes).astype(np.int32)
        return keys, codes.codes

    # ---------------------------------------------------------------------------------------
    def effective_scope(self, caller_scope: str | None, branch_id: str | None) -> str | None:
        """The one subtree both the caller's scope and a branch filter allow (EMPTY_SCOPE if none)."""
        if branch_id is None:
            return caller_scope
        if caller_scope is None:
            return branch_id
        if caller_scope in self.ancestors.get(branch_id, ()):
            return branch_id
        if branch_id in self.ancestors.get(caller_scope, ()):
            return caller_scope
        return EMPTY_SCOPE

    def scope_mask(self, scope: str | None) -> Mask | None:
        if scope is None:
            return None
        if scope == EMPTY_SCOPE:
            return np.zeros(self.n, dtype=np.bool_)
        return self.paths.subtree(scope, self.n)

    def mask(self, caller_scope: str | None, f: LoanFilterValues) -> Mask | None:
        """Rows the caller may see that match the filter; None = every row."""
        mask = self.scope_mask(self.effective_scope(caller_scope, f.branch_id))
        conditions: list[Mask] = []
        for name, value in (
            ("product_code", f.product_code),
            ("officer_id", f.officer_id),
            ("channel_id", f.channel_id),
            ("risk_class", f.risk_class),
            ("bucket", f.bucket),
        ):
            if value is not None:
                conditions.append(self.codes[name].equals(value))
        if f.min_dpd is not None:
            conditions.append(self.dpd >= f.min_dpd)
        if f.max_dpd is not None:
            conditions.append(self.dpd <= f.max_dpd)
        for condition in conditions:
            mask = condition if mask is None else mask & condition
        return mask

    def page(self, mask: Mask | None, after: str | None, first: int) -> tuple[npt.NDArray[np.int64], bool, bool]:
        return keyset_page(self.keys, self.n, mask, after, first)

    def count(self, mask: Mask | None) -> int:
        return self.n if mask is None else int(np.count_nonzero(mask))

    def visible(self, row: int, caller_scope: str | None) -> bool:
        if caller_scope is None:
            return True
        depth = self.paths.node_depth.get(caller_scope)
        code = self.paths.node_code.get(caller_scope)
        return depth is not None and code is not None and bool(self.paths.levels[depth][row] == code)


def keyset_page(
    keys: Keys, n: int, mask: Mask | None, after: str | None, first: int
) -> tuple[npt.NDArray[np.int64], bool, bool]:
    """Up to `first` matching row indexes after the cursor key; whether more follow; whether any
    matching row precedes the cursor (rows are sorted by key)."""
    start = keys.after(after) if after is not None else 0
    if mask is None:
        idx = np.arange(start, min(start + first + 1, n), dtype=np.int64)
        before = start > 0
    else:
        found: list[npt.NDArray[np.int64]] = []
        have, pos, chunk = 0, start, 65536
        while pos < n and have <= first:
            hits = np.flatnonzero(mask[pos : pos + chunk]) + pos
            found.append(hits)
            have += len(hits)
            pos += chunk
        idx = np.concatenate(found)[: first + 1] if found else np.zeros(0, dtype=np.int64)
        before = bool(start > 0 and mask[:start].any())
    return idx[:first], len(idx) > first, before


class Portfolio:
    """Portfolio figures of one date: pre-aggregated per grouping and scope, plus ad-hoc filters."""

    def __init__(self, book: LoanBook) -> None:
        # A weak reference: the book owns its portfolio, and a cycle between them kept a replaced
        # date's memory (a gigabyte at 1M loans) until the garbage collector's next full pass.
        self._book = weakref.ref(book)
        # Per grouping, the figures of every scope stacked in one Block (rows of a scope together);
        # a scope's rows are a slice of it, taken on lookup. Tens of arrays rather than a Block of
        # eleven per branch node and grouping: a 1M-loan date has ~7,000 of those, and handing
        # them over from the loader's process (api/offload.py) cost 230 ms under the GIL.
        self.stacked: dict[str, Block] = {}
        self.slices: dict[tuple[str, str | None], tuple[int, int]] = {}
        self._adhoc: LRU[tuple[str, str | None, LoanFilterValues], Block] = LRU(256)
        self._npl_codes = np.array([book.classes.index(c) for c in NPL_CLASSES], dtype=np.int32)
        self._preaggregate()

    @property
    def book(self) -> LoanBook:
        book = self._book()
        assert book is not None, "a portfolio is used through its loan book"
        return book

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_book"}  # the book links it again

    def _preaggregate(self) -> None:
        """Polars, in two steps. First a cube: loans counted and summed by every group column,
        class, bucket and overdue flag (far fewer rows than loans). Then, per grouping, the cube
        summed by group for the whole bank and by (branch node, group) for every node of each
        branch's path, so every subtree has its rows. Sums of int64 cents are exact."""
        book = self.book
        if book.n == 0:
            return
        n_classes, n_buckets = len(book.classes), len(book.buckets)
        keys_of: dict[str, tuple[str, ...]] = {}
        base: dict[str, npt.NDArray[np.generic]] = {
            "c": book.balance,
            "cls": book.class_index,
            "bkt": book.bucket_index,
            "od": book.dpd > 0,
        }
        for grouping in GROUPINGS:
            keys_of[grouping], base[f"g_{grouping}"] = book.group_codes(grouping)
        group_columns = [f"g_{g}" for g in GROUPINGS]
        cube = (
            pl.DataFrame(base)
            .group_by([*group_columns, "cls", "bkt", "od"])
            .agg(pl.len().cast(pl.Int64).alias("n"), pl.col("c").sum().alias("bal"))
        )
        # node codes of each cube row's path, depth by depth (the path follows the managing branch)
        branch_of_row = cube["g_BRANCH"].to_numpy()
        depth = max((len(p) for p in book.branch_levels.values()), default=0)
        by_depth = []
        for d in range(depth):
            lookup = np.full(len(keys_of["BRANCH"]) + 1, -1, dtype=np.int32)
            for code, path in book.branch_levels.items():
                if d < len(path):
                    lookup[code] = path[d]
            by_depth.append(cube.with_columns(node=pl.Series(lookup[branch_of_row])).filter(pl.col("node") >= 0))
        by_node = pl.concat(by_depth) if by_depth else cube.with_columns(node=pl.lit(-1, dtype=pl.Int32)).head(0)
        n, bal, cls, bkt, od = pl.col("n"), pl.col("bal"), pl.col("cls"), pl.col("bkt"), pl.col("od")
        figures = [
            n.sum().alias("n"),
            bal.sum().alias("bal"),
            n.filter(od).sum().alias("od_n"),
            bal.filter(od).sum().alias("od_bal"),
            *[n.filter(cls == i).sum().alias(f"cn_{i}") for i in range(n_classes)],
            *[bal.filter(cls == i).sum().alias(f"cb_{i}") for i in range(n_classes)],
            *[n.filter(bkt == i).sum().alias(f"bn_{i}") for i in range(n_buckets)],
            *[bal.filter(bkt == i).sum().alias(f"bb_{i}") for i in range(n_buckets)],
        ]
        for grouping in GROUPINGS:
            g = f"g_{grouping}"
            bank = cube.group_by(g).agg(figures).with_columns(node=pl.lit(-1, dtype=pl.Int32))
            nodes = by_node.group_by("node", g).agg(figures).with_columns(pl.col("node").cast(pl.Int32))
            result = pl.concat([bank, nodes.select(bank.columns)]).sort("node", g)
            self._store(grouping, keys_of[grouping], result.rename({g: "g"}), n_classes, n_buckets)

    def _store(
        self, grouping: str, keys: tuple[str, ...], result: pl.DataFrame, n_classes: int, n_buckets: int
    ) -> None:
        node_codes = result["node"].to_numpy()
        g = result["g"].to_numpy()

        def ints(name: str) -> Ints:
            return result[name].fill_null(0).to_numpy().astype(np.int64)

        cols = {name: ints(name) for name in ("n", "bal", "od_n", "od_bal")}
        cn = np.stack([ints(f"cn_{i}") for i in range(n_classes)], axis=1)
        cb = np.stack([ints(f"cb_{i}") for i in range(n_classes)], axis=1)
        bn = np.stack([ints(f"bn_{i}") for i in range(n_buckets)], axis=1)
        bb = np.stack([ints(f"bb_{i}") for i in range(n_buckets)], axis=1)
        npl = [self.book.classes.index(c) for c in NPL_CLASSES]
        self.stacked[grouping] = Block(
            keys=tuple(keys[int(i)] for i in g),
            loan_count=cols["n"],
            balance=cols["bal"],
            overdue_count=cols["od_n"],
            overdue_balance=cols["od_bal"],
            npl_count=cn[:, npl].sum(axis=1),
            npl_balance=cb[:, npl].sum(axis=1),
            class_count=cn,
            class_balance=cb,
            bucket_count=bn,
            bucket_balance=bb,
        )
        starts = np.flatnonzero(np.r_[True, node_codes[1:] != node_codes[:-1]])
        for lo, hi in itertools.pairwise([*starts.tolist(), len(node_codes)]):
            code = int(node_codes[lo])
            node = None if code < 0 else self.book.paths.nodes[code]
            self.slices[(grouping, node)] = (lo, hi)

    def stored(self, grouping: str, scope: str | None) -> Block | None:
        """The pre-aggregated figures of one grouping within one scope (None: no loans there)."""
        span = self.slices.get((grouping, scope))
        if span is None:
            return None
        whole, s = self.stacked[grouping], slice(*span)
        return Block(
            keys=whole.keys[s],
            loan_count=whole.loan_count[s],
            balance=whole.balance[s],
            overdue_count=whole.overdue_count[s],
            overdue_balance=whole.overdue_balance[s],
            npl_count=whole.npl_count[s],
            npl_balance=whole.npl_balance[s],
            class_count=whole.class_count[s],
            class_balance=whole.class_balance[s],
            bucket_count=whole.bucket_count[s],
            bucket_balance=whole.bucket_balance[s],
        )

    def block(self, grouping: str, caller_scope: str | None, f: LoanFilterValues) -> Block | None:
        """Figures of the loans the caller may see that match the filter, grouped; None = no loans."""
        scope = self.book.effective_scope(caller_scope, f.branch_id)
        if scope == EMPTY_SCOPE:
            return None
        if not f.beyond_branch:
            return self.stored(grouping, scope)
        key = (grouping, scope, LoanFilterValues(**{**f.__dict__, "branch_id": None}))
        result = self._adhoc.get_or_make(key, lambda: self._aggregate(grouping, scope, f))
        return result if len(result.keys) else None

    def _aggregate(self, grouping: str, scope: str | None, f: LoanFilterValues) -> Block:
        book = self.book
        mask = book.mask(None, LoanFilterValues(**{**f.__dict__, "branch_id": scope}))
        keys, codes = book.group_codes(grouping)
        rows = np.arange(book.n) if mask is None else np.flatnonzero(mask)
        if len(rows) == 0:
            empty = np.zeros(0, dtype=np.int64)
            wide = np.zeros((0, len(book.classes)), dtype=np.int64)
            return Block((), empty, empty, empty, empty, empty, empty, wide, wide, wide, wide)
        # Exact int64 sums per group: sort by group once, then reduce each run of equal groups.
        g = codes[rows]
        order = np.argsort(g, kind="stable")
        g_sorted = g[order]
        starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
        bal = book.balance[rows][order]
        cls, bkt = book.class_index[rows][order], book.bucket_index[rows][order]
        overdue = book.dpd[rows][order] > 0

        def total(values: Ints) -> Ints:
            return np.add.reduceat(values, starts).astype(np.int64)

        def count(condition: Mask) -> Ints:
            return total(condition.astype(np.int64))

        cn = np.stack([count(cls == i) for i in range(len(book.classes))], axis=1)
        cb = np.stack([total(np.where(cls == i, bal, 0)) for i in range(len(book.classes))], axis=1)
        bn = np.stack([count(bkt == i) for i in range(len(book.buckets))], axis=1)
        bb = np.stack([total(np.where(bkt == i, bal, 0)) for i in range(len(book.buckets))], axis=1)
        return Block(
            keys=tuple(keys[int(i)] for i in g_sorted[starts]),
            loan_count=total(np.ones(len(rows), dtype=np.int64)),
            balance=total(bal),
            overdue_count=count(overdue),
            overdue_balance=total(np.where(overdue, bal, 0)),
            npl_count=cn[:, self._npl_codes].sum(axis=1),
            npl_balance=cb[:, self._npl_codes].sum(axis=1),
            class_count=cn,
            class_balance=cb,
            bucket_count=bn,
            bucket_balance=bb,
        )
