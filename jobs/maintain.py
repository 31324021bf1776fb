"""Table maintenance (`postloan maintain`): compact and Z-order recent dates, re-pin, VACUUM.

Readers pin versions: the API and the metrics stage read each business date of a table at the
Delta version its serving run recorded in the run ledger, not at the latest version. Maintenance
must keep every pinned read working, so it runs under the lake lock (never beside a nightly run)
and works in this order:

1. retention properties from conf/operations.yaml are set on every table (metadata only);
2. for each dated table, the files each served date has at its pinned version are compared with
   the files it has now. Equal (or, where they differ, equal rows) means the pinned content is
   the current content; otherwise the date was written since its run (a rerun that failed after
   some commits) and stays pinned where it is;
3. the recent served dates whose content is current and that no maintenance has re-pinned yet
   are OPTIMIZEd (Z-ordered where configured): new files, the same rows (dataChange false);
4. those dates, and dates whose pins are older than `repin_after_days`, are re-pinned: one ledger
   commit adds, per date, a SUCCEEDED row that copies the serving run's row with the current
   versions of the tables whose content is current. Readers move to it like to a rerun;
5. VACUUM with each table's deletedFileRetentionDuration, keeping every file of every version the
   ledger still pins (so a date written since its run keeps its pinned files until it is rerun).
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs import io
from jobs.config import OperationsConfig, load_config
from jobs.lock import lake_lock
from jobs.runlog import Observer, RunTracker, emit, event_log
from schemas.base import Table
from schemas.lake import RUN_LEDGER
from schemas.registry import LAKE_TABLES

MAINTAIN_LOGGER = "postloan.maintain"
PHASES = ("properties", "optimize", "repin", "vacuum")
# Run ids of re-pin rows start with this, so a later maintenance knows the date is done.
REPIN_PREFIX = "maintain-"


def maintenance_id(now: dt.datetime) -> str:
    return f"{REPIN_PREFIX}{now:%Y%m%dT%H%M%S}"


def is_repin(run_id: str) -> bool:
    return run_id.startswith(REPIN_PREFIX)


@dataclass
class MaintenanceReport:
    maintenance_id: str
    properties_set: dict[str, dict[str, str]] = field(default_factory=dict)
    optimized: dict[str, io.Optimized] = field(default_factory=dict)
    optimized_dates: dict[str, list[dt.date]] = field(default_factory=dict)
    repinned: list[dt.date] = field(default_factory=list)
    # Dates whose current rows differ from those their serving run pinned (a failed rerun wrote them).
    written_since_run: dict[str, list[dt.date]] = field(default_factory=dict)
    # Dates whose pinned version is no longer in the Delta log.
    unreadable_pins: dict[str, list[dt.date]] = field(default_factory=dict)
    vacuumed: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class _TableState:
    """What one dated table holds for the served dates."""

    table: Table
    pinned: dict[dt.date, int]
    current: set[dt.date] = field(default_factory=set)  # the pinned content is the current content


def maintain(
    spark: SparkSession,
    lake: Path,
    operations: OperationsConfig,
    maintenance_id: str,
    observer: Observer | None = None,
    now: dt.datetime | None = None,
) -> MaintenanceReport:
    """Maintain every lake table under the lake lock; see the module docstring for the order."""
    settings = operations.maintenance
    now = now or dt.datetime.now(dt.UTC)
    report = MaintenanceReport(maintenance_id)
    tracker = RunTracker(maintenance_id, None, PHASES, observer or Observer(), timings=report.timings)
    tables = [t for t in LAKE_TABLES if io.table_exists(lake, t)]
    dated = [t for t in tables if "as_of_date" in t.partition_by]
    tracker.event("maintenance_started", lake=str(lake), tables=[t.name for t in tables])
    with lake_lock(lake, maintenance_id) as stale:
        if stale is not None:
            tracker.event("stale_lock_taken_over", level=logging.WARNING, abandoned_run_id=stale.get("run_id"))
            io.fail_abandoned(spark, lake, str(stale.get("run_id")))
        serving = {row["as_of_date"]: row for row in io.serving_rows(lake)}
        newest = max(serving) if serving else None

        with tracker.stage(
            "properties", "properties: retention, statistics and row groups from configuration"
        ) as figures:
            layout = io.WriteLayout.from_config(operations)
            for table in tables:
                changed = io.set_table_properties(spark, lake, table, layout.managed_properties(table))
                if changed:
                    report.properties_set[table.name] = changed
            figures.update(tables_changed=sorted(report.properties_set))

        states: dict[str, _TableState] = {}
        with tracker.stage("optimize", "optimize: compact and Z-order recent dates") as figures:
            for table in dated:
                state = _current_content(spark, lake, table, serving, report, tracker)
                states[table.name] = state
                if table.sort_by:
                    # Written sorted, in range files with small row groups, once per date: nothing to
                    # compact, and a rewrite (compaction or Z-order) would mix the ranges that let a
                    # per-loan read skip to one row group.
                    continue
                recent = sorted(
                    d
                    for d in state.current
                    if newest is not None
                    and (newest - d).days <= settings.optimize_recent_days
                    and not is_repin(serving[d]["run_id"])
                )
                if not recent:
                    continue
                zorder = tuple(settings.zorder_by.get(table.name, ()))
                result = io.optimize(spark, lake, table, recent, zorder)
                report.optimized[table.name] = result
                report.optimized_dates[table.name] = recent
                tracker.event(
                    "optimized",
                    "optimize",
                    table=table.name,
                    dates=recent,
                    zorder_by=list(zorder),
                    files_removed=result.files_removed,
                    files_added=result.files_added,
                    bytes_removed=result.bytes_removed,
                    bytes_added=result.bytes_added,
                )
            if io.table_exists(lake, RUN_LEDGER):
                # The ledger gains a small file per state change; readers always read its latest version.
                report.optimized[RUN_LEDGER.name] = io.optimize(spark, lake, RUN_LEDGER, None, ())
            figures.update(
                tables=sorted(report.optimized),
                files_removed=sum(r.files_removed for r in report.optimized.values()),
                files_added=sum(r.files_added for r in report.optimized.values()),
            )

        with tracker.stage("repin", "repin: record the current versions in the ledger") as figures:
            rows = _repin_rows(lake, serving, states, report, settings.repin_after_days, now, maintenance_id)
            if rows:
                io.append_ledger_rows(spark, lake, rows)
            report.repinned = sorted(r["as_of_date"] for r in rows)
            figures.update(dates=report.repinned)

        with tracker.stage("vacuum", "vacuum: delete files past their retention") as figures:
            pins = {d: dict(row["table_versions"]) for d, row in serving.items()}
            for row in rows:
                pins[row["as_of_date"]] = dict(row["table_versions"])
            for table in tables:
                pinned = {int(v[table.name]) for v in pins.values() if table.name in v}
                # A version already out of the log cannot be kept (reported as pinned_version_gone).
                keep = sorted(pinned & set(io.commit_times(lake, table))) if pinned else []
                deleted = io.vacuum(lake, table, keep)
                report.vacuumed[table.name] = deleted
                tracker.event("vacuumed", "vacuum", table=table.name, files_deleted=deleted, versions_kept=keep)
            figures.update(files_deleted=sum(report.vacuumed.values()))
    tracker.event(
        "maintenance_finished",
        seconds=tracker.elapsed,
        repinned=len(report.repinned),
        written_since_run={k: v for k, v in sorted(report.written_since_run.items())},
        files_deleted=sum(report.vacuumed.values()),
    )
    return report


def _current_content(
    spark: SparkSession,
    lake: Path,
    table: Table,
    serving: dict[dt.date, dict[str, Any]],
    report: MaintenanceReport,
    tracker: RunTracker,
) -> _TableState:
    """Which served dates of the table read the same at their pinned version as now."""
    pinned = {
        d: int(row["table_versions"][table.name]) for d, row in serving.items() if table.name in row["table_versions"]
    }
    state = _TableState(table, pinned)
    if not pinned:
        return state
    in_log = io.commit_times(lake, table)
    gone = sorted(d for d, v in pinned.items() if v not in in_log)
    if gone:
        report.unreadable_pins[table.name] = gone
        tracker.event(
            "pinned_version_gone",
            "optimize",
            logging.ERROR,
            table=table.name,
            dates=gone,
            action="rerun these dates: their pinned versions left the Delta log (log retention)",
        )
    now = io.current_version(lake, table)
    wanted: dict[int, set[dt.date]] = {}
    for day, version in pinned.items():
        if day not in gone:
            wanted.setdefault(version, set()).add(day)
            wanted.setdefault(now, set()).add(day)
    files = io.date_files(lake, table, wanted)
    for day, version in pinned.items():
        if day in gone:
            continue
        then, current = files[version][day], files[now][day]
        if then == current or _same_rows(spark, lake, table, day, version):
            state.current.add(day)
        else:
            report.written_since_run.setdefault(table.name, []).append(day)
            tracker.event(
                "date_written_since_its_run",
                "optimize",
                logging.WARNING,
                table=table.name,
                date=day,
                pinned_version=version,
                current_version=now,
            )
    return state


def _same_rows(spark: SparkSession, lake: Path, table: Table, day: dt.date, version: int) -> bool:
    """Whether the date's rows at the pinned version equal its rows now (files may differ, e.g.
    after an OPTIMIZE whose re-pin did not happen)."""
    on_day = F.col("as_of_date") == F.lit(day)
    then = io.read_table(spark, lake, table, version).where(on_day)
    current = io.read_table(spark, lake, table).where(on_day)
    return then.exceptAll(current).isEmpty() and current.exceptAll(then).isEmpty()


def _repin_rows(
    lake: Path,
    serving: dict[dt.date, dict[str, Any]],
    states: dict[str, _TableState],
    report: MaintenanceReport,
    repin_after_days: int,
    now: dt.datetime,
    maintenance_id: str,
) -> list[dict[str, Any]]:
    """A SUCCEEDED row per date to re-pin: its serving run's row with the current versions of the
    tables whose content is current (the others keep their pins)."""
    versions = {name: io.current_version(lake, state.table) for name, state in states.items()}
    times = {name: io.commit_times(lake, state.table) for name, state in states.items()}
    optimized = {d for dates in report.optimized_dates.values() for d in dates}
    cutoff = now - dt.timedelta(days=repin_after_days)
    stamp = now.astimezone(dt.UTC).replace(tzinfo=None)
    rows: list[dict[str, Any]] = []
    for day, row in sorted(serving.items()):
        pins = {str(k): int(v) for k, v in row["table_versions"].items()}
        old = any(
            times[name].get(version, dt.datetime.min.replace(tzinfo=dt.UTC)) < cutoff
            for name, version in pins.items()
            if name in times
        )
        if day not in optimized and not old:
            continue
        moved = {
            name: versions[name] if name in states and day in states[name].current else version
            for name, version in pins.items()
        }
        if moved == pins:
            continue
        rows.append(
            {
                **row,
                "run_id": f"{maintenance_id}-{day:%Y%m%d}",
                "status": "SUCCEEDED",
                "started_at": stamp,
                "finished_at": stamp,
                "table_versions": moved,
                "error": None,
            }
        )
    return rows


def maintain_command(lake: Path, conf: Path, log_file: Path | None = None) -> int:
    """`postloan maintain`: 0 done, 2 configuration refused, 4 a run holds the lake, 1 otherwise."""
    from jobs.pipeline import EXIT_OK, failure_class
    from jobs.spark import build_session

    config = load_config(conf)  # refused: the CLI exits 2 before anything runs
    ident = maintenance_id(dt.datetime.now(dt.UTC))
    with event_log(config.operations.log, log_file, MAINTAIN_LOGGER) as events:
        spark = build_session(config.spark)
        try:
            report = maintain(spark, lake, config.operations, ident, Observer(console=sys.stdout, events=events))
        except Exception as exc:
            code, event = failure_class(exc)
            print(f"postloan: maintenance {ident} stopped: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            emit(events, "exit", ident, None, level=logging.ERROR, exit_code=code, failure=event)
            return code
        print_maintenance(report)
        emit(events, "exit", ident, None, exit_code=EXIT_OK)
    return EXIT_OK


def print_maintenance(report: MaintenanceReport, out: Any = None) -> None:
    out = out or sys.stdout
    print(f"maintenance {report.maintenance_id}", file=out)
    for name, result in sorted(report.optimized.items()):
        dates = report.optimized_dates.get(name)
        print(
            f"  optimize {name}: {result.files_removed} files -> {result.files_added}"
            + (f" ({len(dates)} dates)" if dates else ""),
            file=out,
        )
    print(f"  re-pinned dates: {', '.join(map(str, report.repinned)) or 'none'}", file=out)
    print(f"  vacuum: {sum(report.vacuumed.values())} files deleted", file=out)
    for name, dates in sorted(report.written_since_run.items()):
        print(f"  written since their runs in {name} (kept pinned; rerun): {', '.join(map(str, dates))}", file=out)
    for name, dates in sorted(report.unreadable_pins.items()):
        print(f"  pinned versions gone from the log in {name}: rerun {', '.join(map(str, dates))}", file=out)
