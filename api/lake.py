"""The lake reader: which runs are served, and each run's tables pinned at the versions it wrote.

The run ledger is the only source of truth. A business date is served by its latest SUCCEEDED
run (a rerun replaces it; a FAILED or RUNNING run is never served), and every table of that date
is read at the Delta version the run recorded in `table_versions`, so one answer never mixes
tables of different runs, even while the batch is writing the next date.

A `Catalog` is an immutable view of the ledger. Each request pins the catalog current when it
starts; a poller (`refresh`, run in a worker thread) builds the next catalog when the ledger's
Delta version moves, loads the newest date's tables into memory first, and only then swaps the
reference: requests in flight finish on the old catalog and its data, new ones see the new run,
and nothing is restarted. Older dates are loaded on first use and kept in a small LRU.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import functools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from api.frames import Keys, arrow_schema, column
from api.offload import portable, run_in_child
from api.settings import LakeSettings
from api.store import LRU, LoanBook
from schemas.base import Table
from schemas.lake import CLASSIFICATION_HISTORY, LOAN_SNAPSHOT, QUARANTINE, RUN_LEDGER
from schemas.parties import BORROWERS

log = logging.getLogger("postloan.api.lake")
V = TypeVar("V")


class NotServed(LookupError):
    """No SUCCEEDED run serves the requested business date (or no run at all yet)."""


@dataclass(frozen=True)
class Run:
    run_id: str
    as_of_date: dt.date
    status: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    table_versions: Mapping[str, int]
    error: str | None
    previous_as_of_date: dt.date | None = None

    @property
    def key(self) -> tuple[str, str]:
        """Identifies the data of the run (a rerun of a date has another key)."""
        return (self.run_id, self.as_of_date.isoformat())


@dataclass(frozen=True)
class Catalog:
    ledger_version: int
    runs: tuple[Run, ...] = ()  # every run in its latest state, newest start first
    served: Mapping[dt.date, Run] = field(default_factory=dict)
    # The newest date's data, loaded before the catalog was published: a request pinned to this
    # catalog keeps it even after the reader has moved on (and evicted it).
    loaded: Mapping[tuple[str, str], concurrent.futures.Future[DateData]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def latest_date(self) -> dt.date | None:
        return max(self.served) if self.served else None

    @functools.cached_property
    def served_version(self) -> tuple[tuple[dt.date, tuple[str, str]], ...]:
        """What the served data is: two catalogs with the same served runs answer every question
        about the data alike, whatever else the ledger says (a RUNNING or FAILED row). Made once
        per catalog: the response cache asks for it on every request."""
        return tuple(sorted((day, run.key) for day, run in self.served.items()))

    @property
    def dates(self) -> tuple[dt.date, ...]:
        return tuple(sorted(self.served))

    def run_for(self, as_of: dt.date | None) -> Run:
        if not self.served:
            raise NotServed("no successful nightly run in the lake yet")
        day = as_of or max(self.served)
        run = self.served.get(day)
        if run is None:
            known = ", ".join(d.isoformat() for d in self.dates[-5:])
            raise NotServed(f"no successful run for business date {day.isoformat()} (latest dates: {known})")
        return run

    def run_by_id(self, run_id: str) -> Run | None:
        for run in self.runs:
            if run.run_id == run_id:
                return run
        return None


_STATUS_RANK = {"RUNNING": 0, "FAILED": 1, "SUCCEEDED": 1}


def build_catalog(ledger_version: int, rows: list[dict[str, Any]]) -> Catalog:
    """Fold the ledger's state rows into runs; pick the serving run of each date."""
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        held = latest.get(row["run_id"])
        if held is None or _STATUS_RANK.get(row["status"], 0) >= _STATUS_RANK.get(held["status"], 0):
            latest[row["run_id"]] = row
    runs: list[Run] = []
    for row in latest.values():
        runs.append(
            Run(
                run_id=row["run_id"],
                as_of_date=row["as_of_date"],
                status=row["status"],
                started_at=row["started_at"],
                finished_at=row.get("finished_at"),
                table_versions={str(k): int(v) for k, v in (row.get("table_versions") or [])},
                error=row.get("error"),
                previous_as_of_date=row.get("previous_as_of_date"),
            )
        )
    runs.sort(key=lambda r: (r.started_at, r.run_id), reverse=True)
    served: dict[dt.date, Run] = {}
    for run in runs:
        if run.status != "SUCCEEDED":
            continue
        incumbent = served.get(run.as_of_date)
        finished = run.finished_at or run.started_at
        if incumbent is None or finished > (incumbent.finished_at or incumbent.started_at):
            served[run.as_of_date] = run
    return Catalog(ledger_version=ledger_version, runs=tuple(runs), served=served)


class TableData:
    """One lake table's rows for a date, sorted by the table key (the keyset order of its list)."""

    def __init__(self, table: Table, rows: pa.Table, order: tuple[str, ...]) -> None:
        self.contract = table
        self.order = order
        if rows.num_rows and order:
            # The key as one string (numbers zero-padded so they sort as numbers), built by Polars;
            # then Arrow sorts the rows by it, keeping the lake's Arrow types.
            frame = pl.from_arrow(rows.select(list(order)))
            assert isinstance(frame, pl.DataFrame)
            parts = []
            for c in order:
                text = pl.col(c).cast(pl.String)
                if pa.types.is_integer(rows.schema.field(c).type):
                    text = text.str.zfill(20)  # counts and MOBs are never negative
                parts.append(text.fill_null(""))
            key = frame.select(pl.concat_str(parts, separator="\x1f").alias("_key"))["_key"].to_arrow()
            key = key.cast(pa.string())
            rows = rows.append_column("_key", key)
            rows = rows.take(pc.sort_indices(key))
        else:
            rows = rows.append_column("_key", pa.array([""] * rows.num_rows, pa.string()))
        self.rows: pa.Table = rows.combine_chunks()
        self.n = self.rows.num_rows
        self.keys = Keys(column(self.rows, "_key"))
        self._encoded: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # Handed over without its lock and its encodings (made on first use where it is served).
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_encoded")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._encoded = {}
        self._lock = threading.Lock()

    def encoded(self, name: str) -> Any:
        """Dictionary codes (strings) or branch-path levels of a column, built on first use."""
        from api.frames import BranchPaths, Codes

        with self._lock:
            if name not in self._encoded:
                values = column(self.rows, name)
                self._encoded[name] = BranchPaths(values) if name == "branch_path" else Codes.encode(values)
            return self._encoded[name]


# What a loan's `history` shows of each date (schemas/lake.py LOAN_SNAPSHOT).
HISTORY_COLUMNS = ("loan_id", "dpd", "bucket", "risk_class", "risk_grade", "outstanding_principal", "branch_id")
ENCODED = frozenset({"bucket", "risk_class", "risk_grade", "branch_id"})  # few distinct values


class LoanDetails:
    """A served date's answers to loan details, for every served date, resident or not: the
    columns of loan_snapshot that a loan's history shows and the date's classification_history,
    both looked up by loan id.

    Without them a loan detail scanned the lake twice for each date not in memory, and at 10% of
    300 req/s on a lake of six 1M-loan dates the scans (two at once, 20-50 ms each) fell behind:
    details ran out of their budget and the answers queued behind them (docs/api.md, Soak). This
    is a fifth of a resident date's memory: strings dictionary-encoded, branch paths kept once per
    branch instead of once per loan.
    """

    def __init__(self, snapshot: pa.Table | None, changes: pa.Table | None) -> None:
        self.paths: dict[str, list[str]] = {}
        if snapshot is None or not snapshot.num_rows:
            days = pa.schema([arrow_schema(LOAN_SNAPSHOT).field(c) for c in HISTORY_COLUMNS]).empty_table()
        else:
            # branch_path depends on the branch only: one copy per branch
            branches = column(snapshot, "branch_id").dictionary_encode()
            codes = np.asarray(branches.indices.fill_null(-1), dtype=np.int64)
            found, first = np.unique(codes, return_index=True)
            paths = column(snapshot, "branch_path").take(pa.array(first)).to_pylist()
            names = branches.dictionary.to_pylist()
            self.paths = {names[c]: path for c, path in zip(found, paths, strict=True) if c >= 0}
            days = snapshot.select(list(HISTORY_COLUMNS))
            days = days.take(pc.sort_indices(column(days, "loan_id")))
            days = pa.table(
                {
                    name: column(days, name).dictionary_encode() if name in ENCODED else column(days, name)
                    for name in HISTORY_COLUMNS
                }
            )
        self.days = days.combine_chunks()
        self.day_keys = Keys(column(self.days, "loan_id"))
        self.changes = TableData(CLASSIFICATION_HISTORY, changes, ("loan_id",)) if changes is not None else None

    def day(self, loan_id: str) -> dict[str, Any] | None:
        """The loan's history columns on the date, with its branch_path (None if not on the book)."""
        i = self.day_keys.find(loan_id)
        if i is None:
            return None
        row: dict[str, Any] = self.days.slice(i, 1).to_pylist()[0]
        row["branch_path"] = self.paths.get(row["branch_id"])
        return row

    def changed(self, loan_id: str) -> list[dict[str, Any]]:
        """The loan's class change recorded on the date (none or one: the table's key)."""
        if self.changes is None or (i := self.changes.keys.find(loan_id)) is None:
            return []
        rows: list[dict[str, Any]] = self.changes.rows.slice(i, 1).to_pylist()
        return rows


@dataclass
class DateParts:
    """What a served date is made of: its loan book, borrowers and the tables read with it (a
    failed one as its exception). Built by the server's threads (`read`) or by a child process
    and handed over whole (api/offload.py)."""

    loans: LoanBook
    borrowers: TableData | None
    # each loan's borrower row (keyset order), joined once here instead of per request
    borrower_index: npt.NDArray[np.int64]
    tables: dict[str, TableData | BaseException | None] = field(default_factory=dict)

    @classmethod
    def read(cls, reader: LakeReader, run: Run, tables: Sequence[tuple[Table, tuple[str, ...]]] = ()) -> DateParts:
        """The date's loan book and borrowers, and of `tables` those the run wrote."""
        snapshot = reader.read(LOAN_SNAPSHOT, run)
        loans = LoanBook(snapshot if snapshot is not None else arrow_schema(LOAN_SNAPSHOT).empty_table())
        rows = reader.read(BORROWERS, run)
        borrowers = TableData(BORROWERS, rows, ("borrower_id",)) if rows is not None else None
        borrower_index = np.full(loans.n, -1, dtype=np.int64)
        if borrowers is not None and borrowers.n and loans.n:
            ids = column(loans.table, "borrower_id").take(pa.array(loans.order))
            found = pc.index_in(ids, value_set=column(borrowers.rows, "borrower_id"))
            borrower_index = np.asarray(found.fill_null(-1), dtype=np.int64)
        parts = cls(loans, borrowers, borrower_index)
        for contract, order in tables:
            if contract.name in run.table_versions:
                try:
                    parts.tables[contract.name] = reader.read_table(run, contract, order)
                except Exception as exc:  # served as a failed load: tried again after the interval
                    parts.tables[contract.name] = portable(exc)
        return parts


class DateData:
    """A served run's data for its business date: the loan book (loaded eagerly) and the other
    tables (loaded on first use, each once, unless they came with the parts)."""

    def __init__(self, reader: LakeReader, run: Run, parts: DateParts | None = None) -> None:
        self.reader = reader
        self.run = run
        parts = parts if parts is not None else DateParts.read(reader, run)
        self.loans = parts.loans
        self.borrowers = parts.borrowers
        self.borrower_index = parts.borrower_index
        self._tables: dict[str, concurrent.futures.Future[TableData | None]] = {
            name: reader.settled(f"table {name}", run, table) for name, table in parts.tables.items()
        }
        self._lock = threading.Lock()
        self._cache: LRU[Hashable, Any] = LRU(512)

    def borrower_rows(self, positions: Sequence[int]) -> list[dict[str, Any] | None]:
        """The borrowers of the loans at keyset positions (None where there is none)."""
        index = self.borrower_index[np.asarray(positions, dtype=np.int64)]
        if self.borrowers is None or not (index >= 0).any():
            return [None] * len(index)
        taken = self.borrowers.rows.take(pa.array(np.where(index >= 0, index, 0))).to_pylist()
        return [row if i >= 0 else None for row, i in zip(taken, index, strict=True)]

    def cached(self, key: Hashable, make: Callable[[], V]) -> V:
        """Answers built from this date's data, kept while the date is resident (they never change)."""
        value: V = self._cache.get_or_make(key, make)
        return value

    def table(self, contract: Table, order: tuple[str, ...]) -> concurrent.futures.Future[TableData | None]:
        """The table's rows for the date (None when the run did not produce it); loaded once, and
        again after a failure as the date itself is (`lake.load_retry_seconds`)."""
        kind = f"table {contract.name}"
        with self._lock:
            future = self._tables.get(contract.name)
            if future is None or self.reader.may_retry(kind, self.run, future):
                future = self.reader.submit_load(kind, self._load_table, self.run, contract, order)
                self._tables[contract.name] = future
        return future

    def loaded_tables(self) -> frozenset[str]:
        """The tables of the date in memory (observability and tests)."""
        with self._lock:
            return frozenset(name for name, future in self._tables.items() if future.done() and not _failed(future))

    def _load_table(self, run: Run, contract: Table, order: tuple[str, ...]) -> TableData | None:
        return self.reader.read_table(run, contract, order)


# Per-loan scans (a loan's history and class changes on dates not in memory) read a whole date's
# files unless their layout lets the scan skip row groups: hundreds of MB of Arrow buffers and
# seconds of CPU each at 1M loans. A request that runs out of time cannot stop its worker thread,
# so without a bound abandoned scans piled up: the soak (docs/api.md, Soak) saw the server grow to
# 11 GB within three minutes of loan-detail traffic. At most SCAN_SLOTS scans run at once (the
# machine's cores), and a scan whose request has run out of time is never started.
SCAN_SLOTS = 2


def _failed(future: concurrent.futures.Future[Any]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)


class LakeReader:
    """Serves the lake's SUCCEEDED runs; see the module docstring for pinning and swapping."""

    def __init__(
        self, lake: Path, settings: LakeSettings, preload: Sequence[tuple[Table, tuple[str, ...]]] = ()
    ) -> None:
        self.lake = Path(lake)
        self.settings = settings
        # Tables (and their key order) loaded with the newest date before it is published.
        self.preload = tuple(preload)
        self._catalog = Catalog(ledger_version=-1)
        self._resident: OrderedDict[tuple[str, str], concurrent.futures.Future[DateData]] = OrderedDict()
        self._details: dict[tuple[str, str], concurrent.futures.Future[LoanDetails]] = {}
        # When a load of a run's date data or loan details last failed (monotonic seconds).
        self._failed_at: dict[tuple[str, tuple[str, str]], float] = {}
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="lake-load")
        self.loads = 0  # dates loaded so far (observability and tests)
        self.detail_loads = 0  # LoanDetails loads started (observability and tests)
        self.child_builds = 0  # dates built in a child process (observability and tests)
        # The newest date while it loads for the next catalog: the LRU must not pick it as the
        # victim because the current catalog's latest is still the older one (with
        # resident_dates 1 it did, and two dates stayed in memory after every other swap).
        self._publishing: tuple[str, str] | None = None
        self._scan_slots = threading.BoundedSemaphore(SCAN_SLOTS)
        self._scans_running = 0
        self.scans = 0  # per-loan scans started (observability and tests)
        self.scans_peak = 0  # most per-loan scans running at once

    # ------------------------------------------------------------------------------------------
    def catalog(self) -> Catalog:
        """The current catalog; a request keeps the one it started with."""
        return self._catalog

    def refresh(self, before_publish: Callable[[Catalog], object] | None = None) -> bool:
        """Pick up ledger changes; load the newest date's run before publishing. True if swapped.
        `before_publish(catalog)` runs once the new catalog is loaded, before requests see it (the
        server warms its response cache there); its failure is logged and does not stop the swap."""
        with self._refresh_lock:
            ledger_path = self.lake / RUN_LEDGER.name
            if not (ledger_path / "_delta_log").is_dir():
                return False
            ledger = DeltaTable(ledger_path)
            version = ledger.version()
            if version == self._catalog.ledger_version:
                return False
            catalog = build_catalog(version, ledger.to_pyarrow_table().to_pylist())
            started = time.monotonic()
            if catalog.latest_date is not None:
                newest = catalog.served[catalog.latest_date]
                self._publishing = newest.key
                try:
                    # One load per poll: the poller tries a failed newest date again each time.
                    future = self.date_data(newest, retry=True, whole=True)
                    data = future.result()  # load before publishing; a failure keeps the previous catalog
                    # What loan details read of it, so that they cost no scan after the swap, and
                    # the tables otherwise read on first use, so that no request waits for them:
                    # a failure here only means scans, or a load on first use as before.
                    extras = [self.loan_details(newest)] + [
                        data.table(contract, order)
                        for contract, order in self.preload
                        if contract.name in newest.table_versions
                    ]
                    for extra in extras:
                        with contextlib.suppress(Exception):
                            extra.result()
                finally:
                    self._publishing = None
                catalog = replace(catalog, loaded={newest.key: future})
            loaded = time.monotonic()
            if before_publish is not None and catalog.latest_date is not None:
                try:
                    before_publish(catalog)
                except Exception as exc:  # the swap matters more than a warm cache
                    log.warning("preparing ledger version %d for serving failed: %s", version, type(exc).__name__)
            prepared = time.monotonic()
            previous = self._catalog
            self._catalog = catalog
            self._evict()
            if catalog.served != previous.served:
                log.info(
                    "serving %d business dates, latest %s (run %s): loaded in %.1f s, prepared in %.1f s",
                    len(catalog.served),
                    catalog.latest_date,
                    catalog.served[catalog.latest_date].run_id if catalog.latest_date else "-",
                    loaded - started,
                    prepared - loaded,
                )
            return True

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------------------------------
    def date_data(self, run: Run, retry: bool = False, whole: bool = False) -> concurrent.futures.Future[DateData]:
        """The run's date data, loading it once (concurrent callers share the load); `retry`
        loads again after a failure without waiting out `lake.load_retry_seconds`. `whole` (a
        date about to be published) loads its preloaded tables and loan details with it, in a
        child process when `lake.load_in_child` is set."""
        with self._lock:
            future = self._resident.get(run.key)
            if future is not None and not self.may_retry("date", run, future, at_once=retry):
                self._resident.move_to_end(run.key)
                return future
            load = self._load_whole if whole and self.settings.load_in_child else self._load
            future = self.submit_load("date", load, run)
            self._resident[run.key] = future
        return future

    def peek(self, run: Run) -> concurrent.futures.Future[DateData] | None:
        """The run's date data if it is resident or loading (never starts a load)."""
        with self._lock:
            return self._resident.get(run.key)

    def loan_details(self, run: Run) -> concurrent.futures.Future[LoanDetails]:
        """The run's LoanDetails, loading them once in the background (kept while it is served)."""
        with self._lock:
            future = self._details.get(run.key)
            if future is None or self.may_retry("details", run, future):
                self.detail_loads += 1
                future = self.submit_load("details", self.read_details, run)
                self._details[run.key] = future
        return future

    def submit_load(self, kind: str, load: Any, run: Run, *args: Any) -> concurrent.futures.Future[Any]:
        """`load(run, *args)` in the pool; a failure is noted for `may_retry`."""
        future = self._pool.submit(load, run, *args)

        def note_failure(done: concurrent.futures.Future[Any]) -> None:
            if not done.cancelled() and done.exception() is not None:
                self._failed_at[(kind, run.key)] = time.monotonic()

        future.add_done_callback(note_failure)
        return future

    def may_retry(self, kind: str, run: Run, future: concurrent.futures.Future[Any], at_once: bool = False) -> bool:
        """A failed load is tried again only after `lake.load_retry_seconds` (or `at_once`): every
        request that needs the date would otherwise read the whole of it again while the cause
        persists (a file being replaced, memory), and those requests are answered by scans or
        refused anyway. A cancelled load is always started again."""
        if future.cancelled():
            return True
        if not _failed(future):
            return False
        failed_at = self._failed_at.get((kind, run.key))
        if failed_at is None:  # failed a moment ago: its callback has not noted the time yet
            return at_once
        return at_once or time.monotonic() - failed_at >= self.settings.load_retry_seconds

    def settled(self, kind: str, run: Run, outcome: V | BaseException) -> concurrent.futures.Future[V]:
        """A load already done (by a child process), as a future; a failure is noted for
        `may_retry` like a failed load of the pool's."""
        future: concurrent.futures.Future[V] = concurrent.futures.Future()
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
            self._failed_at[(kind, run.key)] = time.monotonic()
        else:
            future.set_result(outcome)
        return future

    def read_table(self, run: Run, contract: Table, order: tuple[str, ...]) -> TableData | None:
        rows = self.read(contract, run)
        return None if rows is None else TableData(contract, rows, order)

    def read_details(self, run: Run) -> LoanDetails:
        snapshot = self.read(LOAN_SNAPSHOT, run, columns=[*HISTORY_COLUMNS, "branch_path"])
        return LoanDetails(snapshot, self.read(CLASSIFICATION_HISTORY, run))

    def _load(self, run: Run) -> DateData:
        data = DateData(self, run)
        self.loads += 1
        self._evict()
        return data

    def _load_whole(self, run: Run) -> DateData:
        """The date, its preloaded tables and loan details, built in a child process (api/offload.py)."""
        parts, details = run_in_child(
            build_date,
            self.lake,
            self.settings,
            run,
            self.preload,
            niceness=self.settings.loader_niceness,
            timeout_s=self.settings.load_timeout_seconds,
        )
        with self._lock:
            self.child_builds += 1
            self.detail_loads += 1
            self._details[run.key] = self.settled("details", run, details)
        data = DateData(self, run, parts)
        self.loads += 1
        self._evict()
        return data

    def _evict(self) -> None:
        """Keep at most `resident_dates` dates in memory, never the newest served run."""
        with self._lock:
            keep = self._catalog.served.get(self._catalog.latest_date) if self._catalog.latest_date else None
            served_keys = {r.key for r in self._catalog.served.values()}
            for held in (self._resident, self._details):
                for key in list(held):
                    if key not in served_keys and self._catalog.ledger_version >= 0 and held[key].done():
                        del held[key]  # replaced by a rerun
            spared = {keep.key if keep is not None else None, self._publishing}
            while len(self._resident) > self.settings.resident_dates:
                victim = next((k for k in self._resident if k not in spared), None)
                if victim is None:
                    break
                del self._resident[victim]

    def resident(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._resident)

    # ------------------------------------------------------------------------------------------
    def read(
        self,
        contract: Table,
        run: Run,
        filters: list[tuple[str, str, Any]] | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table | None:
        """A table's rows for the run's date, at the version the run wrote (None if it has none);
        only `columns` of them when given."""
        path = self.lake / contract.name
        if not (path / "_delta_log").is_dir():
            return None
        version = run.table_versions.get(contract.name)
        if version is None:
            return None
        table = DeltaTable(path, version=version)
        partitions = (
            [("as_of_date", "=", run.as_of_date.isoformat())] if "as_of_date" in contract.partition_by else None
        )
        rows = table.to_pyarrow_table(partitions=partitions, filters=filters or None, columns=columns)
        return normalise(rows, contract, columns)

    def scan_loan(self, contract: Table, run: Run, loan_id: str, deadline: float | None = None) -> pa.Table | None:
        """One loan's rows of a table for the run's date, without loading the whole date. Waits
        for one of SCAN_SLOTS; raises TimeoutError, without reading, when `deadline`
        (time.monotonic()) passes first."""
        wait = None if deadline is None else deadline - time.monotonic()
        if wait is not None and (wait <= 0 or not self._scan_slots.acquire(timeout=wait)):
            raise TimeoutError("no time left for a per-loan scan")
        if wait is None:
            self._scan_slots.acquire()
        try:
            with self._lock:
                self.scans += 1
                self._scans_running += 1
                self.scans_peak = max(self.scans_peak, self._scans_running)
            return self.read(contract, run, filters=[("loan_id", "=", loan_id)])
        finally:
            with self._lock:
                self._scans_running -= 1
            self._scan_slots.release()


def build_date(
    lake: Path, settings: LakeSettings, run: Run, tables: Sequence[tuple[Table, tuple[str, ...]]]
) -> tuple[DateParts, LoanDetails | BaseException]:
    """A date's parts with `tables`, and its loan details: what a child process builds for the
    server (LakeReader._load_whole). A failed table or details travel as their exception."""
    reader = LakeReader(lake, settings)
    try:
        parts = DateParts.read(reader, run, tables)
        try:
            details: LoanDetails | BaseException = reader.read_details(run)
        except Exception as exc:
            details = portable(exc)
        return parts, details
    finally:
        reader.close()


def normalise(rows: pa.Table, contract: Table, columns: list[str] | None = None) -> pa.Table:
    """Plain Arrow types (delta-rs may hand out views or large types) in contract column order
    (only `columns` of the contract when given)."""
    wanted = [f for f in arrow_schema(contract) if columns is None or f.name in columns]
    arrays = []
    for f in wanted:
        if f.name not in rows.column_names:
            arrays.append(pa.nulls(rows.num_rows, f.type))
            continue
        col = rows.column(f.name)
        if col.type != f.type:
            # e.g. a timestamp without time zone: keep what delta-rs gave
            with contextlib.suppress(pa.ArrowInvalid, pa.ArrowNotImplementedError):
                col = col.cast(f.type)
        arrays.append(col)
    return pa.Table.from_arrays(arrays, names=[f.name for f in wanted])


# Kept together so the schema module can name what a run's tables are.
CORE_TABLES: tuple[Table, ...] = (LOAN_SNAPSHOT, CLASSIFICATION_HISTORY, QUARANTINE)
