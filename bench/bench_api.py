"""Benchmark of the GraphQL API: latency percentiles and throughput under a concurrent load.

    # a lake of N loans made from a lake the batch wrote (rows replicated with new ids, delta-rs only)
    .venv/bin/python bench/bench_api.py scale --from demo/lake --loans 1000000 --out bench/out/lake1m
    # ... and another business date added to it, as a nightly run commits one (a date to swap to)
    .venv/bin/python bench/bench_api.py scale --from demo/lake --loans 1000000 --out bench/out/lake1m \
        --as-of 2026-11-30 --append
    # serve it and load it (loopback only, bounded in time and requests)
    .venv/bin/python bench/bench_api.py load --lake bench/out/lake1m --seconds 20 --connections 8
    # the query mix for minutes while the batch writes new dates: per minute, per swap, memory
    .venv/bin/python bench/bench_api.py soak --lake bench/out/lake1m --minutes 20 --rate 300 --json soak.json
    # the engine comparison behind docs/api.md (DuckDB vs Polars vs pre-encoded numpy)
    .venv/bin/python bench/bench_api.py engines --lake bench/out/lake1m

`load` starts `postloan serve` as a child process on 127.0.0.1, waits until the lake is loaded,
then runs each scenario with a closed-loop load generator (asyncio, raw HTTP/1.1 keep-alive
connections, one request in flight per connection) in this process, and reports p50/p95/p99
latency as the client sees it, requests per second, errors, and the server's resident memory.

`soak` serves a lake the same way and runs the whole query mix (portfolio, loans pages, one loan
with its history, metrics tables, work lists; `--mix` weights) at a fixed rate (or closed loop)
for `--minutes`, bounded in requests too. Meanwhile it samples the server's memory and CPU and
the load average, polls /readyz and the run ledger, and notes when the server starts serving a
newly SUCCEEDED date. The report: per-minute p50/p99, errors (any non-200 answer or GraphQL
error), latency and errors in a window around each swap and in steady state, the server's own
time per request (from its audit log), and memory min/max/slope. SIGINT or SIGTERM ends it early
with its report. Nothing here is a test: the suite never asserts on time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import math
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# ------------------------------------------------------------------------------------------------
# scale: a big lake from a small one


def scale(source: Path, loans: int, out: Path, as_of: dt.date | None = None, append: bool = False) -> None:
    """Replicate the latest served date of `source` to `loans` rows (loan and borrower ids get a
    suffix per copy, the same on every date), with its borrowers and class changes, as business
    date `as_of` (default: the source's). With `append`, add that date to the lake at `out` (its
    own Delta commits and a SUCCEEDED ledger row, as a nightly run would): a new date for the
    server to swap to."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import DeltaTable, write_deltalake

    from api.lake import build_catalog
    from schemas.lake import CLASSIFICATION_HISTORY, RUN_LEDGER

    ledger = DeltaTable(source / RUN_LEDGER.name)
    run, snapshot = served_snapshot(source)
    day = as_of or run.as_of_date
    parts = [("as_of_date", "=", run.as_of_date)]
    previous: dt.date | None = None
    if append:
        target = DeltaTable(out / RUN_LEDGER.name)
        served = build_catalog(target.version(), target.to_pyarrow_table().to_pylist())
        if day in served.served:
            raise SystemExit(f"{out} already serves {day}")
        previous = served.latest_date

    def read(name: str) -> pa.Table | None:
        path = source / name
        version = run.table_versions.get(name)
        if not (path / "_delta_log").is_dir() or version is None:
            return None
        return DeltaTable(path, version=version).to_pyarrow_table(filters=parts)

    tables = {
        "loan_snapshot": snapshot,
        "borrowers": read("borrowers"),
        CLASSIFICATION_HISTORY.name: read(CLASSIFICATION_HISTORY.name),
    }
    copies = -(-loans // snapshot.num_rows)
    out.mkdir(parents=True, exist_ok=True)
    print(f"scaling {snapshot.num_rows:,} loans of {run.as_of_date} x{copies} -> {loans:,} as {day} in {out}")

    def copy(table: pa.Table, k: int, keys: pa.Array, key: str) -> pa.Table:
        """The rows of the first loans (or their borrowers), ids suffixed with the copy number."""
        rows = table.filter(pc.is_in(table[key], value_set=keys))
        for name in ("loan_id", "borrower_id"):
            if name in rows.column_names:
                index = rows.schema.get_field_index(name)
                rows = rows.set_column(index, name, pc.binary_join_element_wise(rows[name], f"-{k:04d}", ""))
        index = rows.schema.get_field_index("as_of_date")
        return rows.set_column(index, "as_of_date", pa.array([day] * rows.num_rows, rows.schema.field(index).type))

    written = 0
    pieces: dict[str, list[pa.Table]] = {name: [] for name, t in tables.items() if t is not None}
    for k in range(copies):
        take = min(snapshot.num_rows, loans - written)
        if take <= 0:
            break
        first = snapshot.slice(0, take)
        for name in pieces:
            table = tables[name]
            assert table is not None
            key = "borrower_id" if name == "borrowers" else "loan_id"
            pieces[name].append(copy(table, k, first[key], key))
        written += take
    versions: dict[str, int] = {}
    for name, chunks in pieces.items():
        data = pa.concat_tables(chunks)
        if append and (out / name / "_delta_log").is_dir():
            write_deltalake(out / name, data, mode="append")
        else:
            write_deltalake(out / name, data, mode="overwrite", partition_by=["as_of_date"])
        versions[name] = DeltaTable(out / name).version()
    now = dt.datetime.now(dt.UTC)
    row: dict[str, Any] = {c.name: None for c in RUN_LEDGER.columns}
    row.update(
        run_id=f"bench-{loans}-{day}",
        as_of_date=day,
        previous_as_of_date=previous,
        status="SUCCEEDED",
        started_at=now,
        finished_at=now,
        config_hash="bench",
        code_version="bench",
    )
    for name in ("input_rows", "accepted_rows", "quarantined_rows", "output_rows", "summary"):
        row[name] = []
    row["table_versions"] = list(versions.items())
    ledger_schema = pa.schema(ledger.schema().to_arrow())
    rows = pa.Table.from_pylist([row], schema=ledger_schema)
    write_deltalake(out / RUN_LEDGER.name, rows, mode="append" if append else "overwrite")
    print(f"wrote {written:,} loans as {day}; versions {versions}")


# ------------------------------------------------------------------------------------------------
# load: server + load generator


PORTFOLIO = "query($g: GroupBy!) { portfolio(groupBy: $g) { key label loanCount balance overdueBalance overdueRatio nplBalance nplRatio byClass { riskClass loanCount balance } } }"
LOANS = """query($f: LoanFilter, $after: String) { loans(first: 50, filter: $f, after: $after) { totalCount
  edges { cursor node { loanId branchId productCode officerId dpd bucket riskClass riskGrade riskReasons
  outstandingPrincipal borrower { name idNumber phone } } } pageInfo { hasNextPage endCursor } } }"""
LOAN_DETAIL = """query($id: ID!) { loan(loanId: $id) { loanId branchId productCode dpd bucket riskClass riskGrade
  riskReasons outstandingPrincipal overduePrincipal mob borrower { name idNumber phone masked }
  history { asOfDate runId dpd bucket riskClass riskGrade outstandingPrincipal }
  classificationChanges { asOfDate fromClass toClass direction riskReasons } } }"""
MIGRATION = """query($p: PeriodType!, $g: GroupBy!) { migrationRates(periodType: $p, groupBy: $g) { key fromClass
  startBalance denominatorBalance movedDownBalance migrationRate transitions { toState loanCount balance } } }"""
ROLL = "query($g: GroupBy!) { rollRates(groupBy: $g) { key fromBucket fromBalance cureRate rollForwardRate } }"
KPI = "query($g: GroupBy) { kpiBreaches(groupBy: $g) { metric key label value target gap } }"
CHANNELS = "{ channelScorecard { channelId loanCount outstandingBalance nplRatio fpdRate score rating } }"
# One product at a time, as a BI user reads it: the whole bank's vintage grows with every month of
# history and passes the API's 5,000-row list bound (refused BAD_USER_INPUT) after a year or so.
VINTAGE = """query($p: String) { vintage(productCode: $p) { productCode disbursementMonth mob everDpd30Rate
  everDpd90Rate } }"""
TASKS = """query($f: InspectionTaskFilter) { inspectionTasks(filter: $f, first: 20) { totalCount
  edges { node { taskId taskType loanId dueDate officerId status daysOverdue } } } }"""
CASES = """query($f: CollectionCaseFilter) { collectionCases(filter: $f, first: 20) { totalCount
  edges { node { loanId dpd stage mode agencyId actions { actionType attempts } } } } }"""
WARNINGS = """query($f: EarlyWarningFilter) { earlyWarnings(filter: $f, first: 20) { totalCount
  edges { node { loanId warningType detail severity riskClass previousRiskClass } } } }"""

# (kind, raw HTTP request); the kind names the query family the latency is reported under.
Request = tuple[str, bytes]
GROUPINGS = ["HQ", "TIER1_BRANCH", "TIER2_BRANCH", "BRANCH", "PRODUCT", "CHANNEL", "OFFICER"]


def _request(host: str, port: int, path: str, token: str, query: str, variables: dict[str, Any]) -> bytes:
    body = json.dumps({"query": query, "variables": variables}).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: application/json\r\nAuthorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Trace:
    """Every answered (or failed) request: when it was due, its latency, its kind, whether it failed.
    Flat arrays, so a soak of millions of requests stays small."""

    def __init__(self) -> None:
        self.kinds: list[str] = []
        self._kind_index: dict[str, int] = {}
        self.sent = array("d")  # perf_counter seconds
        self.latency = array("d")  # seconds
        self.kind = array("h")
        self.failed = array("b")
        self.error_samples: list[str] = []

    def add(self, kind: str, sent: float, latency: float, error: str | None) -> None:
        index = self._kind_index.get(kind)
        if index is None:
            index = self._kind_index[kind] = len(self.kinds)
            self.kinds.append(kind)
        self.sent.append(sent)
        self.latency.append(latency)
        self.kind.append(index)
        self.failed.append(error is not None)
        if error is not None and sum(e.startswith(f"{kind}: ") for e in self.error_samples) < 3:
            self.error_samples.append(f"{kind}: {error}")  # the first three of each kind


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[bytes, bytes]:
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


async def _worker(
    host: str,
    port: int,
    pick: Callable[[], Request],
    stop_at: list[float],
    budget: list[int],
    trace: Trace,
    interval: float = 0.0,
    timeout: float = 30.0,
) -> None:
    """One connection, one request in flight. With `interval`, requests are sent on a fixed
    schedule and latency counts from the scheduled time (a slow answer delays the next send, and
    that wait is counted: no coordinated omission). `stop_at` is a one-element list: a soak may
    bring the end forward while the workers run. A refused or dropped connection, or an answer
    later than `timeout`, is an error and the connection is opened again."""
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    scheduled = time.perf_counter() + random.random() * interval
    try:
        while time.perf_counter() < stop_at[0] and budget[0] > 0:
            budget[0] -= 1
            kind, request = pick()
            if interval:
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                started = scheduled
                scheduled += interval
            else:
                started = time.perf_counter()
            try:
                if connection is None:
                    connection = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
                head, body = await asyncio.wait_for(_exchange(*connection, request), timeout)
            except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
                trace.add(kind, started, time.perf_counter() - started, type(exc).__name__)
                if connection is not None:
                    connection[1].close()
                    connection = None
                await asyncio.sleep(0.1)  # a server that is gone is not hammered in a tight loop
                continue
            failed = not head.startswith(b"HTTP/1.1 200") or b'"errors"' in body
            error = (head.split(b"\r\n")[0] + b" " + body[:200]).decode(errors="replace") if failed else None
            trace.add(kind, started, time.perf_counter() - started, error)
    finally:
        if connection is not None:
            connection[1].close()


async def drive(
    host: str,
    port: int,
    pick: Callable[[], Request],
    seconds: float,
    connections: int,
    max_requests: int,
    rate: float | None,
    trace: Trace,
) -> float:
    """Closed loop (as fast as the server answers) or, with `rate`, a fixed total request rate;
    bounded by `seconds` and `max_requests`. Returns the elapsed seconds."""
    stop_at = [time.perf_counter() + seconds]
    return await drive_until(host, port, pick, stop_at, connections, max_requests, rate, trace)


async def drive_until(
    host: str,
    port: int,
    pick: Callable[[], Request],
    stop_at: list[float],
    connections: int,
    max_requests: int,
    rate: float | None,
    trace: Trace,
) -> float:
    """`drive` with an end the caller may bring forward (`stop_at[0]`, perf_counter seconds)."""
    budget = [max_requests]
    started = time.perf_counter()
    interval = connections / rate if rate else 0.0
    await asyncio.gather(*[_worker(host, port, pick, stop_at, budget, trace, interval) for _ in range(connections)])
    return time.perf_counter() - started


def summarise(
    latencies: Sequence[float] | npt.NDArray[np.float64], errors: int, elapsed: float | None
) -> dict[str, Any]:
    """p50/p95/p99 (ms) of latencies in seconds; rps when the span is given."""
    ms = np.sort(np.asarray(latencies, dtype=np.float64)) * 1000

    def pct(p: float) -> float:
        return float(ms[min(len(ms) - 1, round(p * (len(ms) - 1)))]) if len(ms) else float("nan")

    out: dict[str, Any] = {"requests": len(ms)}
    if elapsed is not None:
        out["seconds"] = round(elapsed, 2)
        out["rps"] = round(len(ms) / elapsed, 1) if elapsed else 0.0
    out.update(
        p50_ms=round(pct(0.50), 2),
        p95_ms=round(pct(0.95), 2),
        p99_ms=round(pct(0.99), 2),
        max_ms=round(float(ms[-1]), 2) if len(ms) else None,
        mean_ms=round(float(ms.mean()), 2) if len(ms) else None,
        errors=int(errors),
    )
    return out


def run_load(
    host: str,
    port: int,
    pick: Callable[[], Request],
    seconds: float,
    connections: int,
    max_requests: int,
    rate: float | None = None,
) -> dict[str, Any]:
    trace = Trace()
    elapsed = asyncio.run(drive(host, port, pick, seconds, connections, max_requests, rate, trace))
    result = summarise(np.frombuffer(trace.latency), sum(trace.failed), elapsed)
    result["first_error"] = trace.error_samples[0] if trace.error_samples else None
    return result


def bench_conf(conf: Path, cache_mb: int | None, workers: int | None) -> Path:
    """A copy of the configuration folder with the benchmark's API overrides."""
    import yaml

    folder = Path(tempfile.mkdtemp(prefix="bench-conf-"))
    shutil.copytree(conf, folder, dirs_exist_ok=True)
    api_file = folder / "api.yaml"
    raw = yaml.safe_load(api_file.read_text(encoding="utf-8")) if api_file.is_file() else {}
    if cache_mb is not None:
        raw["response_cache_mb"] = cache_mb
    if workers is not None:
        raw["workers"] = workers
    api_file.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return folder


@dataclass
class Served:
    """A `postloan serve` child process on loopback and what the benchmark needs from it."""

    host: str
    port: int
    settings: Any  # api.settings.ApiSettings
    secret: bytes
    process: psutil.Process
    log_path: Path
    startup_seconds: float = 0.0

    def processes(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            return [self.process, *self.process.children(recursive=True)]
        return [self.process]

    def rss_mb(self) -> int:
        total = 0
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return round(total / 2**20)

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def token(self, role: Literal["HQ", "BRANCH"], branch: str | None = None) -> str:
        from api.auth import issue_token

        return issue_token(self.secret, self.settings.auth, role, branch)

    def request(self, token: str, query: str, variables: dict[str, Any]) -> bytes:
        return _request(self.host, self.port, self.settings.path, token, query, variables)

    def audit_trace(self, epoch0: float, kind_of: Callable[[list[str]], str]) -> Trace:
        """The server's own view of every GraphQL request, from its audit log: when it was answered
        (`ts`, moved back by `durationMs`) and how long it took inside the server, per query family
        (`kind_of` the root fields). On a busy machine the client's latency also holds the time
        the load generator waited for a core; this is the server's part."""
        trace = Trace()
        with self.log_path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.startswith("{"):
                    continue
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    record = json.loads(line)
                    answered = dt.datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).timestamp() - epoch0
                    took = record["durationMs"] / 1000
                    error = ",".join(record["errors"]) if record["outcome"] != "ok" else None
                    trace.add(kind_of(record["fields"]), answered - took, took, error)
        return trace

    def log_lines(self) -> list[str]:
        """The server's own log lines (lake loads, swaps, failures): the audit's JSON lines left out."""
        with self.log_path.open(encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n") for line in f if line.strip() and not line.startswith("{")]


@contextlib.contextmanager
def serving(
    lake: Path, conf: Path, port: int, start_timeout: float = 1800.0, keep_log: Path | None = None
) -> Iterator[Served]:
    """`postloan serve` on 127.0.0.1 as a child process, until the first run is loaded; stopped
    (and its log file removed, copied to `keep_log` first when given) on exit."""
    import httpx

    from api.settings import load_api_settings

    settings = load_api_settings(conf)
    secret = secrets.token_urlsafe(48)
    env = {**os.environ, settings.auth.secret_env: secret}
    host = "127.0.0.1"
    # The server writes its audit log (a line a request) to stderr: a file, never an unread pipe.
    server_log = tempfile.NamedTemporaryFile("w+", prefix="bench-api-server-", suffix=".log", delete=False)  # noqa: SIM115 (lives as long as the server)
    command = [sys.executable, "-m", "jobs.cli", "serve", "--lake", str(lake), "--host", host, "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--conf", str(conf)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=server_log,
        text=True,
    )
    served = Served(host, port, settings, secret.encode(), psutil.Process(server.pid), Path(server_log.name))
    try:
        started = time.perf_counter()
        while True:
            try:
                if httpx.get(f"http://{host}:{port}/healthz", timeout=2).json()["status"] == "ok":
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if server.poll() is not None or time.perf_counter() - started > start_timeout:
                server_log.seek(0)
                raise SystemExit(f"server did not start: {server_log.read()[-4000:]}")
            time.sleep(0.5)
        served.startup_seconds = round(time.perf_counter() - started, 1)
        yield served
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server_log.close()
        if keep_log is not None:
            shutil.copy(server_log.name, keep_log)
        Path(server_log.name).unlink(missing_ok=True)


def served_snapshot(lake: Path, columns: list[str] | None = None) -> tuple[Any, Any]:
    """The latest served date's run and its loan_snapshot rows, at the version the run recorded
    (the rows the server answers from, whatever else the lake holds or is writing)."""
    from deltalake import DeltaTable

    from api.lake import build_catalog
    from schemas.lake import RUN_LEDGER

    ledger = DeltaTable(lake / RUN_LEDGER.name)
    catalog = build_catalog(ledger.version(), ledger.to_pyarrow_table().to_pylist())
    if catalog.latest_date is None:
        raise SystemExit(f"{lake}: no SUCCEEDED run")
    run = catalog.served[catalog.latest_date]
    snapshot = DeltaTable(lake / "loan_snapshot", version=run.table_versions["loan_snapshot"]).to_pyarrow_table(
        filters=[("as_of_date", "=", run.as_of_date)], columns=columns
    )
    return run, snapshot


MIX_COLUMNS = ["loan_id", "tier1_branch_id", "tier2_branch_id", "product_code"]


def query_mix(served: Served, snapshot: Any, detail_pool: int = 1000, seed: int = 7) -> dict[str, list[Request]]:
    """The request sets of each query family, built from the served date's book: portfolio
    (seven groupings for HQ, branch and product for each tier-1 branch token), filtered 50-loan
    pages (40-odd filters), one loan with its history and class changes (a seeded sample of loan
    ids, HQ and the loan's tier-1 branch), metrics tables, and work lists (tasks, cases, warnings).
    `snapshot`: the served date's loan_snapshot with MIX_COLUMNS (`served_snapshot`)."""
    tier1 = sorted({v for v in snapshot["tier1_branch_id"].to_pylist() if v})
    tier2 = sorted({v for v in snapshot["tier2_branch_id"].to_pylist() if v})
    products = sorted(set(snapshot["product_code"].to_pylist()))
    hq = served.token("HQ")
    branch_token = {b: served.token("BRANCH", b) for b in tier1}
    req = served.request

    def tagged(kind: str, raw: list[bytes]) -> list[Request]:
        return [(kind, r) for r in raw]

    portfolio = [req(hq, PORTFOLIO, {"g": g}) for g in GROUPINGS] + [
        req(t, PORTFOLIO, {"g": g}) for t in branch_token.values() for g in ("BRANCH", "PRODUCT")
    ]
    filters: list[dict[str, Any]] = []
    for b in tier2:
        filters.append({"branchId": b, "minDpd": 1})
    for p in products:
        filters.append({"productCode": p, "riskClass": "NORMAL"})
        filters.append({"productCode": p, "minDpd": 31})
    for b in tier1:
        filters.append({"branchId": b, "bucket": "M0"})
    loans = [req(hq, LOANS, {"f": f}) for f in filters] + [
        req(t, LOANS, {"f": {"minDpd": 1}}) for t in branch_token.values()
    ]
    rng = random.Random(seed)
    rows = snapshot.num_rows
    detail = []
    for i in sorted(rng.sample(range(rows), min(detail_pool, rows))):
        loan_id, branch = snapshot["loan_id"][i].as_py(), snapshot["tier1_branch_id"][i].as_py()
        token = branch_token[branch] if branch in branch_token and rng.random() < 0.2 else hq
        detail.append(req(token, LOAN_DETAIL, {"id": loan_id}))
    metrics = (
        [req(hq, MIGRATION, {"p": p, "g": g}) for p in ("MONTH", "QUARTER") for g in ("HQ", "TIER1_BRANCH", "PRODUCT")]
        + [req(hq, ROLL, {"g": g}) for g in ("HQ", "TIER1_BRANCH", "PRODUCT")]
        + [req(hq, KPI, {"g": g}) for g in ("TIER1_BRANCH", "OFFICER")]
        + [req(t, KPI, {"g": "BRANCH"}) for t in branch_token.values()]
        + [req(hq, CHANNELS, {})]
        + [req(hq, VINTAGE, {"p": p}) for p in products if p]
    )
    worklists = (
        [req(hq, TASKS, {"f": {"status": "OVERDUE"}})]
        + [req(t, TASKS, {"f": {"status": "OPEN"}}) for t in branch_token.values()]
        + [req(hq, CASES, {"f": {"minDpd": 31}})]
        + [req(t, CASES, {"f": {"mode": "IN_HOUSE"}}) for t in branch_token.values()]
        + [req(hq, WARNINGS, {"f": {"warningType": w}}) for w in ("NEW_SIGNAL", "DOWNGRADE", "FIRST_PAYMENT_DEFAULT")]
    )
    return {
        "portfolio": tagged("portfolio", portfolio),
        "loans_page": tagged("loans_page", loans),
        "loan_detail": tagged("loan_detail", detail),
        "metrics": tagged("metrics", metrics),
        "worklists": tagged("worklists", worklists),
    }


def load(
    lake: Path, seconds: float, connections: int, max_requests: int, port: int, conf: Path, rate: float | None
) -> dict[str, Any]:
    with serving(lake, conf, port) as served:
        results: dict[str, Any] = {
            "lake": str(lake),
            "connections": connections,
            "seconds_per_scenario": seconds,
            "response_cache_mb": served.settings.response_cache_mb,
            "workers": served.settings.workers,
            "startup_load_seconds": served.startup_seconds,
            "server_rss_mb_loaded": served.rss_mb(),
        }
        _, snapshot = served_snapshot(lake, MIX_COLUMNS)
        results["loans"] = snapshot.num_rows  # on the served (latest) date
        mix = query_mix(served, snapshot)
        portfolio_requests, loans_requests = mix["portfolio"], mix["loans_page"]
        rng = random.Random(7)
        scenarios: dict[str, Callable[[], Request]] = {
            "portfolio": lambda: rng.choice(portfolio_requests),
            "loans_filtered_page_50": lambda: rng.choice(loans_requests),
            "mixed_80_20": lambda: rng.choice(portfolio_requests) if rng.random() < 0.8 else rng.choice(loans_requests),
        }
        peak = results["server_rss_mb_loaded"]
        host = served.host
        for name, pick in scenarios.items():
            run_load(host, port, pick, min(3.0, seconds), connections, max_requests)  # warm-up
            paced_runs = [(name, None)] + ([(f"{name}_at_{rate:g}_rps", rate)] if rate else [])
            for label, paced in paced_runs:
                cpu_before = served.cpu_seconds()
                results[label] = run_load(host, port, pick, seconds, connections, max_requests, paced)
                answered = results[label]["requests"]
                results[label]["server_cpu_ms_per_request"] = (
                    round((served.cpu_seconds() - cpu_before) * 1000 / answered, 2) if answered else None
                )
                peak = max(peak, served.rss_mb())
                print(label, json.dumps(results[label]), flush=True)
        results["server_rss_mb_peak"] = peak
        results["cpu_count"] = os.cpu_count()
        results["load_average_1m"] = round(os.getloadavg()[0], 2)
    return results


# ------------------------------------------------------------------------------------------------
# soak: the query mix for minutes, while the nightly batch writes new dates into the served lake

DEFAULT_MIX = "portfolio=50,loans_page=25,loan_detail=10,metrics=10,worklists=5"
TARGETS_P99_MS = {"portfolio": 10.0, "loans_page": 50.0}  # the API issue's targets (docs/api.md)


FAMILY_OF_FIELD = {
    "portfolio": "portfolio",
    "loans": "loans_page",
    "loan": "loan_detail",
    **dict.fromkeys(("migrationRates", "rollRates", "kpiBreaches", "channelScorecard", "vintage"), "metrics"),
    **dict.fromkeys(("inspectionTasks", "collectionCases", "earlyWarnings"), "worklists"),
}


def family_of(fields: list[str]) -> str:
    """The query family of an audited request (its first root field)."""
    return FAMILY_OF_FIELD.get(fields[0], fields[0]) if fields else "-"


def parse_mix(text: str) -> dict[str, float]:
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        weights[name.strip()] = float(weight)
    return weights


def ledger_version(lake: Path) -> int:
    """The run ledger's latest Delta version, from the names of its commit files (read-only)."""
    log = lake / "run_ledger" / "_delta_log"
    versions = [int(p.name[:-5]) for p in log.glob("*.json") if p.name[:-5].isdigit()] if log.is_dir() else []
    return max(versions, default=-1)


async def _readyz(host: str, port: int) -> dict[str, Any]:
    """GET /readyz on its own connection: the served date as the server reports it."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET /readyz HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    state: dict[str, Any] = json.loads(body) if body else {}
    state["http"] = int(head.split(b" ")[1]) if head else None
    return state


def _slope_per_minute(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 3:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return round(60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var, 2) if var else None


def _log_time(line: str) -> float | None:
    """Epoch seconds of a server log line ("2026-12-04 17:35:22,123 INFO ..."; local time)."""
    with contextlib.suppress(ValueError):
        return dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


class Frame:
    """A finished trace as numpy arrays, to cut into windows."""

    def __init__(self, trace: Trace) -> None:
        self.kinds = list(trace.kinds)
        self.sent = np.array(trace.sent, dtype=np.float64)
        self.latency = np.array(trace.latency, dtype=np.float64)
        self.kind = np.array(trace.kind, dtype=np.int16)
        self.failed = np.array(trace.failed, dtype=np.bool_)

    def within(self, windows: Sequence[tuple[float, float]]) -> npt.NDArray[np.bool_]:
        """Requests whose scheduled send time falls in any [start, end) (perf_counter seconds)."""
        mask = np.zeros(len(self.sent), dtype=np.bool_)
        for start, end in windows:
            mask |= (self.sent >= start) & (self.sent < end)
        return mask

    def summary(self, mask: npt.NDArray[np.bool_], span: float | None) -> dict[str, Any]:
        """Every request of the mask, then each kind (p99 targets are per kind)."""
        out = {"all": summarise(self.latency[mask], int(self.failed[mask].sum()), span)}
        for index, kind in enumerate(self.kinds):
            of_kind = mask & (self.kind == index)
            if of_kind.any():
                out[kind] = summarise(self.latency[of_kind], int(self.failed[of_kind].sum()), None)
        return out


@dataclass(frozen=True)
class SoakPlan:
    """How long and how hard a soak drives the server, and how it watches it (`soak --help`)."""

    minutes: float
    connections: int
    max_requests: int
    rate: float | None  # total requests per second; None: closed loop
    mix_weights: dict[str, float]
    detail_pool: int
    sample_seconds: float
    poll_seconds: float
    window_seconds: float
    warmup_seconds: float
    stop_after_swaps: int | None
    server_log: Path | None = None  # keep the server's log (its audit lines: each request's own time)


def soak(lake: Path, conf: Path, port: int, plan: SoakPlan) -> dict[str, Any]:
    """Serve the lake and run the query mix for `plan.minutes` (or until `plan.stop_after_swaps` swaps were
    seen and their windows passed); sample the server's memory and CPU, watch /readyz and the
    ledger for new dates, and break the latencies down per minute, per swap and in steady state."""
    with serving(lake, conf, port, keep_log=plan.server_log) as served:
        host = served.host
        state = asyncio.run(_readyz(host, port))
        if state.get("http") != 200:
            raise SystemExit(f"{lake}: the server is not ready ({state.get('reason')}): soak needs a SUCCEEDED date")
        _, snapshot = served_snapshot(lake, MIX_COLUMNS)
        mix = query_mix(served, snapshot, plan.detail_pool)
        unknown = set(plan.mix_weights) - set(mix)
        if unknown:
            raise SystemExit(f"unknown query families in --mix: {sorted(unknown)}; known: {sorted(mix)}")
        kinds = [k for k, w in plan.mix_weights.items() if w > 0]
        weights = [plan.mix_weights[k] for k in kinds]
        rng = random.Random(11)

        def pick() -> Request:
            return rng.choice(mix[rng.choices(kinds, weights)[0]])

        if plan.warmup_seconds > 0:  # not recorded: a cold response cache is not the steady state
            asyncio.run(
                drive(host, port, pick, plan.warmup_seconds, plan.connections, plan.max_requests, plan.rate, Trace())
            )

        trace = Trace()
        # perf_counter, server RSS MB, server CPU s, load 1m, this process's CPU s (is the client the limit?)
        samples: list[tuple[float, int, float, float, float]] = []
        client = psutil.Process()
        watched: list[tuple[float, str | None, int | None, int | None, float]] = []  # t, latest date, dates, HTTP, ms
        ledger: list[tuple[float, int]] = []  # t, version (on change)
        t0 = time.perf_counter()
        epoch0 = time.time() - t0  # epoch = perf_counter + epoch0
        stop_at = [t0 + plan.minutes * 60]

        async def sample(done: asyncio.Event) -> None:
            while not done.is_set():
                mine = client.cpu_times()
                samples.append(
                    (
                        time.perf_counter(),
                        served.rss_mb(),
                        served.cpu_seconds(),
                        os.getloadavg()[0],
                        mine.user + mine.system,
                    )
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), plan.sample_seconds)

        async def watch(done: asyncio.Event) -> None:
            swaps = 0
            while not done.is_set():
                t = time.perf_counter()
                try:
                    ready = await asyncio.wait_for(_readyz(host, port), 10)
                    latest, dates, http = ready.get("latestBusinessDate"), ready.get("businessDates"), ready["http"]
                except (OSError, ValueError, TimeoutError, IndexError):
                    latest, dates, http = None, None, None
                known = next((w[1] for w in reversed(watched) if w[1] is not None), None)
                if known is not None and latest is not None and latest != known:
                    swaps += 1
                    print(f"[{(t - t0) / 60:5.1f} min] serving {latest} ({dates} dates)", flush=True)
                    if plan.stop_after_swaps is not None and swaps >= plan.stop_after_swaps:
                        stop_at[0] = min(stop_at[0], t + plan.window_seconds)
                watched.append((t, latest, dates, http, round((time.perf_counter() - t) * 1000, 1)))
                seen, version = time.perf_counter(), ledger_version(lake)  # after /readyz, which may take seconds
                if not ledger or ledger[-1][1] != version:
                    ledger.append((seen, version))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), plan.poll_seconds)

        async def progress(done: asyncio.Event) -> None:
            """A console line a minute, from the requests answered since the last line (cheap: it
            runs in the load generator's event loop)."""
            minute, seen = 0, 0
            while not done.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), t0 + 60 * (minute + 1) - time.perf_counter())
                if done.is_set():
                    break
                upto = len(trace.latency)
                line = summarise(trace.latency[seen:upto], sum(trace.failed[seen:upto]), 60.0)
                seen, minute = upto, minute + 1
                print(
                    f"[minute {minute}] {line['rps']} req/s p50 {line['p50_ms']} p99 {line['p99_ms']} "
                    f"max {line['max_ms']} ms, errors {line['errors']}, server RSS "
                    f"{samples[-1][1] if samples else '-'} MB, load {os.getloadavg()[0]:.1f}, "
                    f"serving {watched[-1][1] if watched else '-'}",
                    flush=True,
                )

        async def main() -> float:
            done = asyncio.Event()
            for signum in (signal.SIGINT, signal.SIGTERM):
                # Ends the soak early: the workers finish their request in flight, the report is written.
                asyncio.get_running_loop().add_signal_handler(signum, lambda: stop_at.__setitem__(0, 0.0))
            monitors = [asyncio.create_task(m(done)) for m in (sample, watch, progress)]
            try:
                return await drive_until(
                    host, port, pick, stop_at, plan.connections, plan.max_requests, plan.rate, trace
                )
            finally:
                done.set()
                await asyncio.gather(*monitors)

        elapsed = asyncio.run(main())
        log_lines = served.log_lines()
        audited = served.audit_trace(epoch0, family_of) if served.settings.audit.enabled else None
        settings = served.settings

    return _soak_report(
        lake=lake,
        trace=trace,
        audited=audited,
        samples=samples,
        watched=watched,
        ledger=ledger,
        log_lines=log_lines,
        t0=t0,
        epoch0=epoch0,
        elapsed=elapsed,
        window_seconds=plan.window_seconds,
        config={
            "lake": str(lake),
            "minutes": plan.minutes,
            "connections": plan.connections,
            "rate": plan.rate,
            "max_requests": plan.max_requests,
            "mix": plan.mix_weights,
            "detail_pool": plan.detail_pool,
            "response_cache_mb": settings.response_cache_mb,
            "workers": settings.workers,
            "resident_dates": settings.lake.resident_dates,
            "poll_seconds_server": settings.lake.poll_seconds,
            "warmup_seconds": plan.warmup_seconds,
            "started": dt.datetime.fromtimestamp(t0 + epoch0).isoformat(timespec="seconds"),
            "startup_load_seconds": served.startup_seconds,
            "cpu_count": os.cpu_count(),
        },
    )


def _soak_report(
    lake: Path,
    trace: Trace,
    audited: Trace | None,
    samples: list[tuple[float, int, float, float, float]],
    watched: list[tuple[float, str | None, int | None, int | None, float]],
    ledger: list[tuple[float, int]],
    log_lines: list[str],
    t0: float,
    epoch0: float,
    elapsed: float,
    window_seconds: float,
    config: dict[str, Any],
) -> dict[str, Any]:
    """The soak's figures: totals, steady state (outside the swap windows), each swap, each other
    ledger commit, each minute, and the server's memory over time."""
    from deltalake import DeltaTable

    from api.lake import build_catalog

    frame = Frame(trace)
    server = Frame(audited) if audited is not None else None

    def server_side(windows: Sequence[tuple[float, float]], inside: bool = True) -> dict[str, Any] | None:
        """Time inside the server (audit log) for the requests answered in the windows (or outside)."""
        if server is None:
            return None
        hit = server.within(windows)
        recorded = (server.sent >= t0) & (server.sent < t0 + elapsed)  # not the warm-up
        return server.summary(recorded & (hit if inside else ~hit), None)

    def minute_of(t: float) -> float:
        return round((t - t0) / 60, 2)

    def perf_of(stamp: dt.datetime | None) -> float | None:
        if stamp is None:
            return None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.UTC)  # the batch writes UTC (spark.sql.session.timeZone)
        return stamp.timestamp() - epoch0

    ledger_table = DeltaTable(lake / "run_ledger")
    catalog = build_catalog(ledger_table.version(), ledger_table.to_pyarrow_table().to_pylist())
    swap_log = [(t - epoch0, line) for line in log_lines if "serving " in line and (t := _log_time(line)) is not None]

    # A swap: the first /readyz answer naming a new latest date. Its window runs from the run's
    # SUCCEEDED row (the server's poller then loads the date) to `window_seconds` after the swap
    # (the new run's response cache starts empty).
    swaps: list[dict[str, Any]] = []
    windows: list[tuple[float, float]] = []
    answered = [w for w in watched if w[1] is not None]  # a poll that failed says nothing
    for before, after in itertools.pairwise(answered):
        if before[1] == after[1]:
            continue
        assert before[1] is not None and after[1] is not None
        run = catalog.served.get(dt.date.fromisoformat(after[1]))
        succeeded = perf_of(run.finished_at) if run is not None else None
        logged = next((t for t, line in swap_log if f"latest {after[1]} " in line and t <= after[0] + 1), None)
        start = min(succeeded, before[0]) if succeeded is not None else before[0]
        end = after[0] + window_seconds
        windows.append((start, end))
        in_window = [s for s in samples if start <= s[0] < end]
        rss_before = [s[1] for s in samples if s[0] < start]
        swaps.append(
            {
                "from_date": before[1],
                "to_date": after[1],
                "run_id": run.run_id if run is not None else None,
                "succeeded_at_minute": minute_of(succeeded) if succeeded is not None else None,
                "server_swapped_at_minute": minute_of(logged) if logged is not None else None,
                "readyz_saw_it_at_minute": minute_of(after[0]),
                "seconds_from_succeeded_to_served": round((logged or after[0]) - succeeded, 1)
                if succeeded is not None
                else None,
                "window_minutes": [minute_of(start), minute_of(end)],
                "latency": frame.summary(frame.within([(start, end)]), end - start),
                "server_side_ms": server_side([(start, end)]),
                "rss_mb_before": rss_before[-1] if rss_before else None,
                "rss_mb_max_in_window": max((s[1] for s in in_window), default=None),
                "rss_mb_end_of_window": in_window[-1][1] if in_window else None,
                "load_average_max_in_window": round(max((s[3] for s in in_window), default=0.0), 2),
            }
        )

    def outside(t: float) -> bool:
        return not any(a <= t < b for a, b in windows)

    # Other ledger commits (a run starting writes its RUNNING row) change every response-cache key.
    flushes = [
        {
            "ledger_version": version,
            "at_minute": minute_of(t),
            "latency": frame.summary(frame.within([(t - 5, t + window_seconds)]), window_seconds + 5),
        }
        for t, version in ledger[1:]
        if outside(t)
    ]

    steady = frame.summary(~frame.within(windows), None)
    per_minute = []
    for minute in range(math.ceil(elapsed / 60)):
        start, end = t0 + 60 * minute, min(t0 + 60 * (minute + 1), t0 + elapsed)
        figures = frame.summary(frame.within([(start, end)]), end - start)
        in_minute = [s for s in samples if start <= s[0] < end]
        row: dict[str, Any] = {"minute": minute + 1, **figures.pop("all")}
        row["p99_ms_by_kind"] = {kind: f["p99_ms"] for kind, f in figures.items()}
        row["server_rss_mb_max"] = max((s[1] for s in in_minute), default=None)
        row["load_average_1m"] = round(statistics.fmean(s[3] for s in in_minute), 2) if in_minute else None
        if len(in_minute) >= 2:
            used = in_minute[-1][2] - in_minute[0][2]
            span = in_minute[-1][0] - in_minute[0][0]
            row["server_cpu_percent"] = round(100 * used / span, 1)
            row["client_cpu_percent"] = round(100 * (in_minute[-1][4] - in_minute[0][4]) / span, 1)
        row["serving"] = next((w[1] for w in reversed(watched) if w[0] < end and w[1]), None)
        per_minute.append(row)

    rss = [(s[0] - t0, float(s[1])) for s in samples]
    levels = []  # the server's memory between swaps: one level per set of served dates
    for a, b in itertools.pairwise([t0, *[end for _, end in windows], t0 + elapsed]):
        between = [s[1] for s in samples if a <= s[0] < b and outside(s[0])]
        if between:
            levels.append(
                {"from_minute": minute_of(a), "to_minute": minute_of(b), "median_mb": statistics.median(between)}
            )
    targets = {}
    for kind, limit in TARGETS_P99_MS.items():
        if kind in steady:
            during = [s["latency"][kind]["p99_ms"] for s in swaps if kind in s["latency"]]
            targets[kind] = {
                "p99_target_ms": limit,
                "p99_ms_steady": steady[kind]["p99_ms"],
                "met_steady": steady[kind]["p99_ms"] < limit,
                "p99_ms_during_swaps": during,
                "met_during_swaps": all(p < limit for p in during) if during else None,
            }
    loads = [s[3] for s in samples]
    return {
        "config": config,
        "seconds": round(elapsed, 1),
        "totals": frame.summary(frame.within([(t0, t0 + elapsed + 60)]), elapsed),
        "errors": int(frame.failed.sum()),
        "error_samples": trace.error_samples,
        "steady_state": steady,
        "steady_state_server_side": server_side(windows, inside=False),
        "targets": targets,
        "swaps": swaps,
        "ledger_changes_outside_swaps": flushes,
        "server_rss_mb": {
            "first": samples[0][1] if samples else None,
            "last": samples[-1][1] if samples else None,
            "min": min((s[1] for s in samples), default=None),
            "max": max((s[1] for s in samples), default=None),
            "slope_mb_per_minute": _slope_per_minute(rss),
            "slope_mb_per_minute_outside_swaps": _slope_per_minute([p for p in rss if outside(p[0] + t0)]),
            "between_swaps": levels,
        },
        "load_average_1m": {
            "min": round(min(loads), 2) if loads else None,
            "mean": round(statistics.fmean(loads), 2) if loads else None,
            "max": round(max(loads), 2) if loads else None,
        },
        "readyz": {
            "polls": len(watched),
            "not_ready": sum(1 for w in watched if w[3] != 200),
            "p99_ms": summarise([w[4] / 1000 for w in watched], 0, None)["p99_ms"],
        },
        "served_dates_at_end": [d.isoformat() for d in catalog.dates],
        "per_minute": per_minute,
        "rss_samples": [[round(s[0] - t0, 1), s[1], round(s[3], 2)] for s in samples],
        "server_log": log_lines[-100:],
    }


# ------------------------------------------------------------------------------------------------
# engines: DuckDB vs Polars vs pre-encoded numpy on the two hot paths


def engines(lake: Path, repeat: int) -> dict[str, Any]:
    import bisect

    import duckdb
    import numpy as np
    import polars as pl
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    table = DeltaTable(lake / "loan_snapshot").to_pyarrow_table()
    out: dict[str, Any] = {"rows": table.num_rows}

    def compare(candidates: dict[str, Callable[[], Any]], n: int = repeat) -> dict[str, dict[str, float]]:
        """Rounds interleave the candidates, so a busy machine slows them alike; min and median."""
        for fn in candidates.values():
            fn()
        times: dict[str, list[float]] = {name: [] for name in candidates}
        for _ in range(n):
            for name, fn in candidates.items():
                t = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t) * 1000)
        return {
            name: {"min_ms": round(min(xs), 2), "median_ms": round(statistics.median(xs), 2)}
            for name, xs in times.items()
        }

    con = duckdb.connect()
    con.execute("SET threads TO 2")
    con.register("raw", table)
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    out["sort_by_loan_id"] = compare(
        {
            "duckdb": lambda: con.sql("SELECT * FROM raw ORDER BY loan_id").to_arrow_table(),
            "polars": lambda: frame.sort("loan_id").to_arrow(),
        },
        5,
    )
    srt = con.sql("SELECT * FROM raw ORDER BY loan_id").to_arrow_table().combine_chunks()
    con.register("loans", srt)
    pdf = pl.from_arrow(srt)
    assert isinstance(pdf, pl.DataFrame)
    tier1 = sorted({v for v in srt["tier1_branch_id"].to_pylist() if v})[0]
    product = srt["product_code"][0].as_py()
    after = srt["loan_id"][srt.num_rows // 2].as_py()
    agg = "count(*), sum(outstanding_principal), sum(outstanding_principal) FILTER (WHERE dpd > 0)"
    # The load-time aggregation as api/store.py does it: the portfolio cube over int-coded columns.
    codes: dict[str, Any] = {"c": np.arange(srt.num_rows, dtype=np.int64), "dpd_pos": srt["dpd"].to_numpy() > 0}
    for name in ("branch_id", "product_code", "channel_id", "officer_id", "risk_class", "bucket"):
        codes[name] = np.asarray(pc.dictionary_encode(srt[name].combine_chunks()).indices.fill_null(-1))
    coded = pa.table(codes)
    coded_pl = pl.from_arrow(coded)
    assert isinstance(coded_pl, pl.DataFrame)
    con.register("coded", coded)
    cube_keys = [k for k in codes if k not in ("c",)]
    out["preaggregate_cube"] = compare(
        {
            "duckdb": lambda: con.sql(
                f"SELECT {', '.join(cube_keys)}, count(*) AS n, sum(c) AS bal FROM coded GROUP BY ALL"
            ).to_arrow_table(),
            "polars": lambda: coded_pl.group_by(cube_keys).agg(pl.len().alias("n"), pl.col("c").sum().alias("bal")),
        },
        10,
    )
    out["sort_by_loan_id"]["arrow_sort_indices_take"] = compare(
        {"arrow": lambda: table.take(pc.sort_indices(table.column("loan_id")))}, 3
    )["arrow"]

    def duck_page() -> Any:
        where = f"list_contains(branch_path, '{tier1}') AND product_code = '{product}' AND dpd > 0"
        rows = con.execute(f"SELECT * FROM loans WHERE {where} AND loan_id > ? ORDER BY loan_id LIMIT 51", [after])
        return rows.fetchall(), con.sql(f"SELECT count(*) FROM loans WHERE {where}").fetchall()[0]

    def polars_page() -> Any:
        f = pl.col("branch_path").list.contains(tier1) & (pl.col("product_code") == product) & (pl.col("dpd") > 0)
        return pdf.select(f.sum()).item(), pdf.filter(f & (pl.col("loan_id") > after)).head(51).to_dicts()

    enc_t1 = pc.dictionary_encode(srt["tier1_branch_id"].combine_chunks())
    t1_codes, t1_code = np.asarray(enc_t1.indices), enc_t1.dictionary.to_pylist().index(tier1)
    enc_p = pc.dictionary_encode(srt["product_code"].combine_chunks())
    p_codes, p_code = np.asarray(enc_p.indices), enc_p.dictionary.to_pylist().index(product)
    dpd = srt["dpd"].to_numpy()
    ids = srt["loan_id"].combine_chunks()

    class Keys:
        def __len__(self) -> int:
            return len(ids)

        def __getitem__(self, i: int) -> Any:
            return ids[i].as_py()

    def numpy_page() -> Any:
        m = (t1_codes == t1_code) & (p_codes == p_code) & (dpd > 0)
        start = bisect.bisect_right(Keys(), after)
        idx = np.flatnonzero(m[start:])[:51] + start
        return int(np.count_nonzero(m)), srt.take(idx).to_pylist()

    out["filtered_page_50"] = compare({"duckdb": duck_page, "polars": polars_page, "numpy": numpy_page})

    def duck_group() -> Any:
        return con.sql(
            f"SELECT product_code, {agg} FROM loans WHERE list_contains(branch_path, '{tier1}') GROUP BY 1"
        ).fetchall()

    def polars_group() -> Any:
        return (
            pdf.filter(pl.col("branch_path").list.contains(tier1))
            .group_by("product_code")
            .agg(pl.len(), pl.col("outstanding_principal").sum())
            .to_dicts()
        )

    out["adhoc_portfolio_group_by"] = compare({"duckdb": duck_group, "polars": polars_group})
    return out


# ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("scale")
    s.add_argument("--from", dest="source", type=Path, required=True)
    s.add_argument("--loans", type=int, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--as-of", type=dt.date.fromisoformat, default=None, help="write as this business date")
    s.add_argument("--append", action="store_true", help="add the date to the lake at --out (a new served date)")
    ld = sub.add_parser("load")
    ld.add_argument("--lake", type=Path, required=True)
    ld.add_argument("--seconds", type=float, default=20.0, help="per scenario (bounded)")
    ld.add_argument("--connections", type=int, default=8)
    ld.add_argument("--max-requests", type=int, default=200_000, help="per scenario (bounded)")
    ld.add_argument("--port", type=int, default=18080)
    ld.add_argument("--conf", type=Path, default=REPO / "conf")
    ld.add_argument("--json", type=Path, default=None, help="also write the results here")
    ld.add_argument("--cache-mb", type=int, default=None, help="override response_cache_mb (0 = off)")
    ld.add_argument("--workers", type=int, default=None, help="override workers")
    ld.add_argument("--rate", type=float, default=None, help="also run each scenario at this fixed rate (req/s)")
    sk = sub.add_parser("soak", help="the query mix for minutes while the batch writes new dates")
    sk.add_argument("--lake", type=Path, required=True)
    sk.add_argument("--minutes", type=float, default=10.0, help="bounded: the soak stops after this")
    sk.add_argument("--connections", type=int, default=8)
    sk.add_argument("--rate", type=float, default=300.0, help="total request rate (req/s); 0 = closed loop")
    sk.add_argument("--max-requests", type=int, default=2_000_000, help="bounded: the soak stops after this")
    sk.add_argument("--mix", type=parse_mix, default=parse_mix(DEFAULT_MIX), help=f"weights (default {DEFAULT_MIX})")
    sk.add_argument("--detail-pool", type=int, default=1000, help="loan ids the loan_detail queries draw from")
    sk.add_argument("--sample-seconds", type=float, default=5.0, help="server RSS and CPU sampling interval")
    sk.add_argument("--poll-seconds", type=float, default=1.0, help="/readyz and ledger polling interval")
    sk.add_argument("--window-seconds", type=float, default=60.0, help="after a swap, still counted as the swap")
    sk.add_argument("--warmup-seconds", type=float, default=10.0, help="load before recording (not reported)")
    sk.add_argument("--stop-after-swaps", type=int, default=None, help="end a window after this many swaps")
    sk.add_argument("--port", type=int, default=18081)
    sk.add_argument("--conf", type=Path, default=REPO / "conf")
    sk.add_argument("--cache-mb", type=int, default=None, help="override response_cache_mb (0 = off)")
    sk.add_argument("--workers", type=int, default=None, help="override workers")
    sk.add_argument("--json", type=Path, default=None, help="also write the results here")
    sk.add_argument("--server-log", type=Path, default=None, help="keep the server's log (audit lines) here")
    e = sub.add_parser("engines")
    e.add_argument("--lake", type=Path, required=True)
    e.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args(argv)
    if args.command == "scale":
        scale(args.source, args.loans, args.out, args.as_of, args.append)
        return 0
    if args.command in ("load", "soak"):
        conf = bench_conf(args.conf, args.cache_mb, args.workers)
        try:
            results = serve_and_measure(args, conf)
        finally:
            shutil.rmtree(conf, ignore_errors=True)
    else:
        results = engines(args.lake, args.repeat)
    text = json.dumps(results, indent=2)
    print(text)
    if getattr(args, "json", None):
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


def serve_and_measure(args: argparse.Namespace, conf: Path) -> dict[str, Any]:
    if args.command == "load":
        return load(args.lake, args.seconds, args.connections, args.max_requests, args.port, conf, args.rate)
    plan = SoakPlan(
        minutes=args.minutes,
        connections=args.connections,
        max_requests=args.max_requests,
        rate=args.rate or None,
        mix_weights=args.mix,
        detail_pool=args.detail_pool,
        sample_seconds=args.sample_seconds,
        poll_seconds=args.poll_seconds,
        window_seconds=args.window_seconds,
        warmup_seconds=args.warmup_seconds,
        stop_after_swaps=args.stop_after_swaps,
        server_log=args.server_log,
    )
    return soak(args.lake, conf, args.port, plan)


if __name__ == "__main__":
    sys.exit(main())
