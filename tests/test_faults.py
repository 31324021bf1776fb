"""Faults (issue 8): nothing lost, nothing half-visible.

The nightly CLI is killed with SIGKILL from outside, at points chosen from its own progress lines
(no fault hooks in the code under test): during ingest, at a stage boundary, and just after the
first Delta commit of the write. After each kill the lake is read with delta-rs and with the API's
reader: the dates served and the rows pinned for them are exactly those before the kill. A rerun
takes over the stale lock, closes the abandoned runs as FAILED and writes what a never-killed lake
holds; a second run while one holds the lake is refused. Changed inputs are picked up by a rerun.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from pyspark.sql import SparkSession

from api.lake import LakeReader
from api.settings import LakeSettings
from jobs.config import AppConfig, load_config
from jobs.generate import generate_landing
from jobs.lock import RunLocked
from jobs.pipeline import run_nightly
from schemas.registry import LAKE_TABLES
from tests.helpers import ledger, serving

REPO = Path(__file__).resolve().parent.parent
MONTH_END = dt.date(2026, 9, 30)
AS_OF = dt.date(2026, 10, 31)
LOANS = 160
LOCK = "_postloan_run.lock"
DATA_TABLES = {t.name: t for t in LAKE_TABLES if t.name != "run_ledger"}
INGEST, COLLECTIONS, WRITE = "ingest: validating landing rows", "collections", "write: Delta tables"


# --------------------------------------------------------------------------------------------
# Reading the lake with delta-rs (independently of jobs/)


def run_states(lake: Path) -> dict[str, list[dict[str, Any]]]:
    """Each run's ledger rows, RUNNING first."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(ledger(lake), key=lambda r: (r["finished_at"] is not None, r["finished_at"] or r["started_at"])):
        runs.setdefault(row["run_id"], []).append(row)
    return runs


def rows_of(table: pa.Table, drop: tuple[str, ...] = ()) -> list[tuple[Any, ...]]:
    names = [n for n in table.column_names if n not in drop]
    return sorted((tuple(r[n] for n in names) for r in table.select(names).to_pylist()), key=repr)


def read_date(lake: Path, name: str, day: dt.date, version: int | None = None) -> pa.Table:
    """A table's rows for the date, at a version (default: the latest)."""
    table = DeltaTable(str(lake / name), version=version)
    if "as_of_date" in DATA_TABLES[name].partition_by:
        return table.to_pyarrow_table(partitions=[("as_of_date", "=", day.isoformat())])
    rows = table.to_pyarrow_table()
    return rows.filter(pc.equal(rows["as_of_date"], pa.scalar(day, pa.date32())))


def pinned(lake: Path, run: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, list[tuple[Any, ...]]]:
    """Every table of a run's date as readers see it: at the version the run recorded."""
    return {
        name: rows_of(read_date(lake, name, run["as_of_date"], version), drop)
        for name, version in sorted(run["table_versions"].items())
    }


def served_content(lake: Path) -> dict[dt.date, tuple[str, dict[str, list[tuple[Any, ...]]]]]:
    return {day: (run["run_id"], pinned(lake, run)) for day, run in serving(lake).items()}


def api_view(reader: LakeReader) -> dict[dt.date, tuple[str, int]]:
    """What the API serves: each date's run and its number of loans, after a refresh."""
    reader.refresh()
    catalog = reader.catalog()
    return {day: (run.run_id, reader.date_data(run).result().loans.n) for day, run in catalog.served.items()}


def fresh_api_view(lake: Path) -> dict[dt.date, tuple[str, int]]:
    reader = LakeReader(lake, LakeSettings())
    try:
        return api_view(reader)
    finally:
        reader.close()


def commits(lake: Path) -> dict[str, int]:
    """Delta commits of every data table (files in _delta_log)."""
    return {name: len(list((lake / name / "_delta_log").glob("*.json"))) for name in DATA_TABLES}


# --------------------------------------------------------------------------------------------
# The CLI in a process group of its own


class Cli:
    """`postloan nightly` for AS_OF in its own session; stdout read line by line in a thread."""

    def __init__(self, landing: Path, lake: Path, conf: Path, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "POSTLOAN_CONF"}
        self.log = log
        self._err = log.open("w", encoding="utf-8")
        args = ["nightly", "--as-of", AS_OF.isoformat(), "--landing", str(landing), "--lake", str(lake)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", *args, "--conf", str(conf)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            start_new_session=True,
        )
        self.seen: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def failure(self, what: str) -> str:
        tail = self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        return f"{what}; exit {self.proc.poll()}; stdout {self.seen}; stderr tail:\n" + "\n".join(tail)

    def wait_for(self, message: str, timeout: float = 300) -> None:
        """Block until the run prints `[AS_OF] message`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(self.failure(f"no {message!r} within {timeout}s"))
            if line is None:
                pytest.fail(self.failure(f"the run ended before {message!r}"))
            self.seen.append(line)
            # A stage's line is its message, then its place in the run: "  (stage 2/6, 17% done, ...)".
            if line.split("  (stage ")[0] == f"[{AS_OF}] {message}":
                return

    def kill(self) -> None:
        """SIGKILL the whole process group: the Python driver and its JVM."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the JVM too (a zombie of it may linger: bounded)
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        self._err.close()

    def finish(self, timeout: float = 600) -> int:
        rc = self.proc.wait(timeout=timeout)
        while (line := self._lines.get(timeout=30)) is not None:
            self.seen.append(line)
        self._err.close()
        return rc

    def __enter__(self) -> Cli:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.kill()


# --------------------------------------------------------------------------------------------
# Fixtures: one small book, a never-killed lake, and a copy of it killed three times


@dataclass
class Book:
    landing: Path
    lake: Path
    config: AppConfig
    content: dict[dt.date, tuple[str, dict[str, list[tuple[Any, ...]]]]] = field(default_factory=dict)
    api: dict[dt.date, tuple[str, int]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def book(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory, conf_dir: Path) -> Book:
    """Month-end and AS_OF run once, cleanly: the reference no fault may change."""
    root = tmp_path_factory.mktemp("faults")
    landing, lake = root / "landing", root / "clean-lake"
    generate_landing(spark, LOANS, AS_OF, 11, landing, "parquet")
    config = load_config(conf_dir)
    for day in (MONTH_END, AS_OF):
        assert run_nightly(spark, config, day, landing, lake).status == "SUCCEEDED"
    return Book(landing, lake, config, served_content(lake), fresh_api_view(lake))


@dataclass
class Kill:
    point: str
    run_id: str
    pid: int
    lock_owner: dict[str, Any] | None
    states: dict[str, list[str]]
    errors: dict[str, list[str | None]]
    content: dict[dt.date, tuple[str, dict[str, list[tuple[Any, ...]]]]]
    api_fresh: dict[dt.date, tuple[str, int]]
    api_polling: dict[dt.date, tuple[str, int]]
    api_runs: dict[str, str]
    new_commits: dict[str, int]
    refused: str | None = None


@dataclass
class Killed:
    lake: Path
    kills: list[Kill]


@pytest.fixture(scope="module")
def killed(
    spark: SparkSession, book: Book, tmp_path_factory: pytest.TempPathFactory, conf_dir: Path
) -> Iterator[Killed]:
    """A copy of the clean lake whose rerun of AS_OF is killed three times; what each kill left."""
    root = tmp_path_factory.mktemp("killed")
    lake = root / "lake"
    shutil.copytree(book.lake, lake)
    polling = LakeReader(lake, LakeSettings())  # a server that keeps polling through the crashes
    api_view(polling)
    kills: list[Kill] = []
    try:
        for n, point in enumerate((INGEST, COLLECTIONS, WRITE)):
            before = commits(lake)
            with Cli(book.landing, lake, conf_dir, root / f"kill-{n}.log") as cli:
                cli.wait_for(INGEST)
                refused = None
                if point == COLLECTIONS:  # a second run while this one holds the lake (another process)
                    try:
                        run_nightly(spark, book.config, AS_OF, book.landing, lake, run_id=f"refused-{n}")
                    except RunLocked as exc:
                        refused = str(exc)
                if point != INGEST:
                    cli.wait_for(point)
                if point == WRITE:  # kill as soon as the first table of the date is committed
                    deadline = time.monotonic() + 300
                    while commits(lake) == before and cli.proc.poll() is None and time.monotonic() < deadline:
                        time.sleep(0.02)
                    assert cli.proc.poll() is None, cli.failure("the run ended before it was killed")
                cli.kill()
                pid = cli.proc.pid
            owner = json.loads((lake / LOCK).read_text(encoding="utf-8")) if (lake / LOCK).exists() else None
            runs = run_states(lake)
            killed_id = str((owner or {}).get("run_id"))
            kills.append(
                Kill(
                    point=point,
                    run_id=killed_id,
                    pid=pid,
                    lock_owner=owner,
                    states={k: [r["status"] for r in v] for k, v in runs.items()},
                    errors={k: [r["error"] for r in v] for k, v in runs.items()},
                    content=served_content(lake),
                    api_fresh=fresh_api_view(lake),
                    api_polling=api_view(polling),
                    api_runs={},
                    refused=refused,
                    new_commits={k: v - before[k] for k, v in commits(lake).items() if v != before[k]},
                )
            )
            kills[-1].api_runs = {r.run_id: r.status for r in polling.catalog().runs}
        yield Killed(lake, kills)
    finally:
        polling.close()


# --------------------------------------------------------------------------------------------
# 1-2: a killed run leaves its lock, no success, and the served dates exactly as they were


def test_a_killed_run_leaves_a_stale_lock_and_no_partial_date_visible(book: Book, killed: Killed) -> None:
    assert [k.point for k in killed.kills] == [INGEST, COLLECTIONS, WRITE]
    assert set(book.content) == {MONTH_END, AS_OF}
    assert {day: n for day, (_, n) in book.api.items()} == {
        day: len(tables["loan_snapshot"]) for day, (_, tables) in book.content.items()
    }
    ids = [k.run_id for k in killed.kills]
    assert len(set(ids)) == 3 and not set(ids) & {run_id for run_id, _ in book.content.values()}
    for n, kill in enumerate(killed.kills):
        where = f"killed at {kill.point!r}"
        # The crashed run's lock stays behind: it names the dead process and its run.
        assert kill.lock_owner is not None, where
        assert kill.lock_owner["pid"] == kill.pid and kill.run_id.startswith(f"{AS_OF:%Y%m%d}-"), where
        # The ledger shows it started and never finished; the run killed before it is now closed.
        assert kill.states[kill.run_id] == ["RUNNING"], where
        for earlier in ids[:n]:
            assert kill.states[earlier] == ["RUNNING", "FAILED"], where
            assert (kill.errors[earlier][-1] or "").startswith("abandoned"), where
        # Readers see exactly what they saw before the kill: same runs, same pinned rows.
        assert kill.content == book.content, where
        assert kill.api_fresh == book.api, where
        assert kill.api_polling == book.api, where
        assert kill.api_runs[kill.run_id] == "RUNNING", where
    # While the second run held the lake, a run in another process was refused, and left no trace.
    assert killed.kills[1].refused is not None
    assert f"another nightly run ({ids[1]}) holds" in killed.kills[1].refused
    assert "refused-1" not in killed.kills[2].states
    # Only the last kill landed inside the write: some tables committed the date, not all of them.
    assert not killed.kills[0].new_commits and not killed.kills[1].new_commits
    written = killed.kills[2].new_commits
    assert written and len(written) < len(book.content[AS_OF][1]), written
    # ...and what it committed is really there at the latest version, unpinned by any success.
    for name in written:
        pinned_version = dict(serving(killed.lake)[AS_OF]["table_versions"])[name]
        latest = DeltaTable(str(killed.lake / name)).version()
        assert latest > pinned_version, name


# --------------------------------------------------------------------------------------------
# 3-4: the rerun takes over, a second concurrent run is refused, the result is the clean one


def test_rerun_takes_over_the_stale_lock_refuses_a_second_run_and_equals_a_clean_lake(
    spark: SparkSession, book: Book, killed: Killed
) -> None:
    lake = killed.lake
    killed_ids = [k.run_id for k in killed.kills]
    rerun_id = f"{AS_OF:%Y%m%d}-rerun"
    said: queue.Queue[str] = queue.Queue()
    outcome: dict[str, Any] = {}

    def rerun() -> None:
        try:
            outcome["report"] = run_nightly(spark, book.config, AS_OF, book.landing, lake, rerun_id, said.put)
        except BaseException as exc:  # reported by the assertions below
            outcome["error"] = exc

    first = threading.Thread(target=rerun, daemon=True)
    first.start()
    deadline = time.monotonic() + 600
    heard: list[str] = []
    while INGEST not in heard:  # the lock is held from before the ingest line
        assert "error" not in outcome and time.monotonic() < deadline, (outcome, heard)
        with contextlib.suppress(queue.Empty):
            heard.append(said.get(timeout=1))
    owner = json.loads((lake / LOCK).read_text(encoding="utf-8"))
    assert owner == {**owner, "pid": os.getpid(), "run_id": rerun_id}
    with pytest.raises(RunLocked, match=rf"another nightly run \({rerun_id}\) holds"):
        run_nightly(spark, book.config, AS_OF, book.landing, lake, run_id="second-attempt")
    first.join(timeout=900)
    assert "error" not in outcome, outcome
    assert outcome["report"].status == "SUCCEEDED"
    assert not (lake / LOCK).exists()

    runs = run_states(lake)
    assert "second-attempt" not in runs
    for run_id in killed_ids:
        assert [r["status"] for r in runs[run_id]] == ["RUNNING", "FAILED"], run_id
        assert runs[run_id][-1]["error"].startswith("abandoned"), run_id
    assert [r["status"] for r in runs[rerun_id]] == ["RUNNING", "SUCCEEDED"]
    served = serving(lake)
    assert served[AS_OF]["run_id"] == rerun_id
    assert served[MONTH_END]["run_id"] == book.content[MONTH_END][0]

    # Every table's rows for the date equal the never-killed lake's, at the latest version and
    # at the versions the run pinned (the run id column names the run, so it is left out).
    clean = serving(book.lake)[AS_OF]
    assert set(served[AS_OF]["table_versions"]) == set(clean["table_versions"])
    for name in DATA_TABLES:
        exists = (book.lake / name / "_delta_log").is_dir()
        assert (lake / name / "_delta_log").is_dir() == exists, name
        if exists:
            source = rows_of(read_date(lake, name, AS_OF), ("run_id",))
            expected = rows_of(read_date(book.lake, name, AS_OF), ("run_id",))
            assert source == expected, name
    assert pinned(lake, served[AS_OF], ("run_id",)) == pinned(book.lake, clean, ("run_id",))
    api = fresh_api_view(lake)
    assert api[AS_OF] == (rerun_id, book.api[AS_OF][1])
    assert api[MONTH_END] == book.api[MONTH_END]


# --------------------------------------------------------------------------------------------
# 5: a late repayment and a corrected schedule are picked up by a rerun of the date


def snapshot_rows(lake: Path, day: dt.date) -> dict[str, dict[str, Any]]:
    run = serving(lake)[day]
    rows = read_date(lake, "loan_snapshot", day, run["table_versions"]["loan_snapshot"]).to_pylist()
    return {r["loan_id"]: r for r in rows}


def history_rows(lake: Path, day: dt.date) -> dict[str, dict[str, Any]]:
    run = serving(lake)[day]
    rows = read_date(lake, "classification_history", day, run["table_versions"]["classification_history"])
    return {r["loan_id"]: r for r in rows.to_pylist()}


def test_a_rerun_picks_up_a_late_repayment_and_a_corrected_schedule(
    spark: SparkSession, book: Book, tmp_path: Path
) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    shutil.copytree(book.landing, landing)
    shutil.copytree(book.lake, lake)
    before, month_end = snapshot_rows(lake, AS_OF), snapshot_rows(lake, MONTH_END)
    history_before = history_rows(lake, AS_OF)

    # A loan overdue only by days past due (beyond the technical grace), in the same class at the
    # month-end: a repayment of all its arrears on the date cures it.
    cured = next(
        r
        for _, r in sorted(before.items())
        if 1 <= r["dpd"] <= 89
        and r["risk_class"] == "SPECIAL_MENTION"
        and list(r["risk_reasons"]) == ["DPD_OVERDUE"]
        and month_end.get(r["loan_id"], {}).get("risk_class") == "SPECIAL_MENTION"
    )
    assert cured["loan_id"] not in history_before
    # Another overdue loan whose schedule is corrected: its oldest unpaid instalment was due
    # 20 days later than first delivered, so it is 20 days less past due (M2 -> M1).
    shifted = next(
        r
        for _, r in sorted(before.items())
        if 31 <= r["dpd"] <= 50 and r["loan_id"] != cured["loan_id"] and r["risk_class"] == "SPECIAL_MENTION"
    )
    assert shifted["bucket"] == "M2"

    repayments = sorted((landing / "repayments").rglob("*.parquet"))
    schema = pq.read_schema(repayments[0])
    late = {c: None for c in schema.names} | {
        "txn_id": "LATE-20261031-0001",
        "loan_id": cured["loan_id"],
        "value_date": AS_OF,
        "amount": Decimal(str(cured["overdue_principal"])) + Decimal(str(cured["overdue_interest"])),
    }
    pq.write_table(pa.Table.from_pylist([late], schema=schema), landing / "repayments" / "late-delivery.parquet")

    old_due = AS_OF - dt.timedelta(days=shifted["dpd"])
    corrected = 0
    for path in sorted((landing / "schedule").rglob("*.parquet")):
        schedule = pq.read_table(path)
        hit = pc.and_(
            pc.equal(schedule["loan_id"], shifted["loan_id"]),
            pc.equal(schedule["due_date"], pa.scalar(old_due, pa.date32())),
        )
        if not pc.any(hit).as_py():
            continue
        due = pc.if_else(hit, pa.scalar(old_due + dt.timedelta(days=20), pa.date32()), schedule["due_date"])
        schedule = schedule.set_column(
            schedule.schema.get_field_index("due_date"), "due_date", due.cast(schedule.schema.field("due_date").type)
        )
        corrected += pc.sum(hit.cast(pa.int64())).as_py()
        pq.write_table(schedule, path)
    assert corrected == 1

    report = run_nightly(spark, book.config, AS_OF, landing, lake)
    assert report.status == "SUCCEEDED"
    assert serving(lake)[AS_OF]["run_id"] == report.run_id
    assert report.input_rows["repayments"] == dict(serving(book.lake)[AS_OF]["input_rows"])["repayments"] + 1

    after = snapshot_rows(lake, AS_OF)
    now = after[cured["loan_id"]]
    # DOMAIN 1: all arrears paid by the date -> nothing uncovered -> DPD 0, bucket M0;
    # DOMAIN 2: no DPD floor, no other rule fired -> NORMAL, reported as PERFORMING.
    assert (now["dpd"], now["bucket"], now["risk_class"], list(now["risk_reasons"])) == (
        0,
        "M0",
        "NORMAL",
        ["PERFORMING"],
    )
    assert now["overdue_principal"] == 0 and now["overdue_interest"] == 0
    moved = after[shifted["loan_id"]]
    assert (moved["dpd"], moved["bucket"], moved["risk_class"]) == (shifted["dpd"] - 20, "M1", "SPECIAL_MENTION")
    # Nobody else changed.
    drop = ("run_id",)
    others = sorted(set(before) - {cured["loan_id"], shifted["loan_id"]})
    assert [tuple(v for k, v in after[i].items() if k not in drop) for i in others] == [
        tuple(v for k, v in before[i].items() if k not in drop) for i in others
    ]

    history = history_rows(lake, AS_OF)
    change = history[cured["loan_id"]]
    assert (change["previous_as_of_date"], change["from_class"], change["to_class"], change["direction"]) == (
        MONTH_END,
        "SPECIAL_MENTION",
        "NORMAL",
        "UPGRADE",
    )
    assert list(change["risk_reasons"]) == ["PERFORMING"]
    # The corrected loan stays in its class: its row (NORMAL at the month-end) is as it was.
    assert history[shifted["loan_id"]] == history_before.get(shifted["loan_id"])
    assert set(history) == set(history_before) | {cured["loan_id"]}
