"""The nightly batch: read -> transform -> validate -> write, then the ledger says SUCCEEDED.

Each stage is a pure function of DataFrames and configuration values (jobs/delinquency.py,
jobs/classification.py, ...); this module only wires them, and `jobs/io.py` does all the IO.
A structurally unusable input is refused before anything is written; any later failure leaves a
FAILED row in the ledger, and readers never serve a date whose run did not succeed.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import pkgutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from jobs import io
from jobs.classification import classification_changes, classify
from jobs.collections import build_collections
from jobs.config import AppConfig, load_config
from jobs.delinquency import on_book, with_branch_hierarchy, with_delinquency
from jobs.ingest import checked_counts, ingest, unreconciled
from jobs.inspections import build_inspections, inspection_summary
from jobs.lock import lake_lock
from jobs.metrics import build_metrics
from jobs.params import params_frame, with_params
from jobs.runlog import Observer, RunTracker, emit, event_log, new_run_id
from jobs.stages import Stage, StageContext, settle, settle_partitioned
from schemas.base import Table
from schemas.inspections import INSPECTION_TASKS, SETTLED_LOANS
from schemas.lake import BUCKETS, CLASSIFICATION_HISTORY, LOAN_SNAPSHOT, QUARANTINE, RISK_CLASSES
from schemas.landing import LANDING_TABLES
from schemas.parties import BORROWERS

# Stages after classification, in order; each returns the lake tables it produces for the date.
# Collections reads nothing of the inspection stage, but metrics may read every earlier output.
STAGES: tuple[Stage, ...] = (build_inspections, build_collections, build_metrics)

PACKAGE_VERSION = "0.1.0"


class DataQualityError(RuntimeError):
    """The batch produced output that breaks a table contract; nothing of it is published."""


@dataclass
class RunReport:
    run_id: str
    as_of: dt.date
    status: str = "RUNNING"
    previous_as_of: dt.date | None = None
    input_rows: dict[str, int] = field(default_factory=dict)
    accepted_rows: dict[str, int] = field(default_factory=dict)
    quarantined_rows: dict[str, int] = field(default_factory=dict)
    output_rows: dict[str, int] = field(default_factory=dict)
    table_versions: dict[str, int] = field(default_factory=dict)
    summary: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


# Written into a --py-files bundle by `postloan bundle` (jobs/bundle.py): no git beside a zip.
CODE_VERSION_FILE = "code_version.txt"


def code_version() -> str:
    try:
        stamped = pkgutil.get_data("jobs", CODE_VERSION_FILE)
    except OSError:
        stamped = None
    if stamped:
        return stamped.decode("utf-8").strip()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return f"{PACKAGE_VERSION}+{commit or 'unknown'}"


def loans_on_book(as_of: dt.date, tables: dict[str, DataFrame], params: DataFrame) -> DataFrame:
    """Loans on the book with their branch hierarchy, borrower region and resolved parameters."""
    regions = tables["borrowers"].select("borrower_id", "region_code")
    return (
        tables["loans"]
        .transform(on_book(as_of))
        .transform(with_branch_hierarchy(tables["branches"]))
        .join(regions, "borrower_id", "left")
        .transform(with_params(params))
    )


def build_delinquency(as_of: dt.date, config: AppConfig, tables: dict[str, DataFrame], loans: DataFrame) -> DataFrame:
    """The loans on the book (`loans_on_book`) with their delinquency columns."""
    d = config.delinquency
    return loans.transform(
        with_delinquency(
            as_of, tables["schedule"], tables["repayments"], d.fpd_days, d.bucket_width_days, d.bucket_count
        )
    )


def build_snapshot(
    as_of: dt.date,
    config: AppConfig,
    tables: dict[str, DataFrame],
    delinquent: DataFrame,
    previous: DataFrame | None,
) -> DataFrame:
    """loan_snapshot for the date: delinquency plus classification against the previous run."""
    return delinquent.transform(
        classify(
            as_of,
            config.profile,
            tables["schedule"],
            tables["risk_signals"],
            tables["overrides"],
            tables["products"],
            previous,
        )
    ).withColumn("as_of_date", F.lit(as_of))


def snapshot_checks() -> list[Column]:
    """The snapshot's contract checks and summary counts, as aggregates over its rows.

    No distinct count among them, so they can be observed while the snapshot is settled
    (`Observation`, which takes no distinct aggregate) instead of costing a pass of their own.
    """
    return [
        F.count(F.lit(1)).alias("loans"),
        F.sum(F.when(~F.col("risk_class").isin(*RISK_CLASSES) | F.col("risk_class").isNull(), 1).otherwise(0)).alias(
            "bad_class"
        ),
        F.sum(F.when(~F.col("bucket").isin(*BUCKETS) | F.col("bucket").isNull(), 1).otherwise(0)).alias("bad_bucket"),
        F.sum(F.when((F.col("dpd") < 0) | F.col("dpd").isNull(), 1).otherwise(0)).alias("bad_dpd"),
        F.sum(F.when(F.col("outstanding_principal") < 0, 1).otherwise(0)).alias("bad_balance"),
        *[F.sum(F.when(F.col("risk_class") == c, 1).otherwise(0)).alias(f"class_{c}") for c in RISK_CLASSES],
        *[F.sum(F.when(F.col("bucket") == b, 1).otherwise(0)).alias(f"bucket_{b}") for b in BUCKETS],
        F.sum(F.col("is_npl").cast("int")).alias("npl_loans"),
    ]


def validate_snapshot(snapshot: DataFrame, counted: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Contract checks on the snapshot before it is published; returns summary counts.

    `counted` holds `snapshot_checks` as observed while the snapshot was settled; without it they
    are counted here.
    """
    if counted is None:
        row = snapshot.agg(*snapshot_checks()).first()
        assert row is not None
        counted = row.asDict()
    counts = {k: int(v or 0) for k, v in counted.items()}
    # The keys alone, grouped: a distinct count beside the other checks made Spark expand every
    # row once per kind of aggregate (2.3 s on a 1M-loan night, and a 4.5 s compilation).
    repeated = snapshot.groupBy("loan_id").count().where(F.col("count") > 1).agg(F.sum(F.col("count") - 1)).first()
    problems = []
    if repeated is not None and repeated[0]:
        problems.append(f"{repeated[0]} duplicate loan rows")
    for name in ("bad_class", "bad_bucket", "bad_dpd", "bad_balance"):
        if counts[name]:
            problems.append(f"{counts[name]} rows with {name.removeprefix('bad_')} out of contract")
    if problems:
        raise DataQualityError("loan_snapshot: " + "; ".join(problems))
    return {k: v for k, v in counts.items() if not k.startswith("bad_")}


def run_nightly(
    spark: SparkSession,
    config: AppConfig,
    as_of: dt.date,
    landing: Path,
    lake: Path,
    run_id: str | None = None,
    progress: Callable[[str], None] | None = None,
    stages: tuple[Stage, ...] = STAGES,
    observer: Observer | None = None,
) -> RunReport:
    """Run the batch for one business date; rerunning a date replaces its rows.

    `stages` are the stages after classification; the nightly job runs them all (a benchmark may
    build history with the core alone). `progress` gets each stage's message as it starts; the
    observer gets progress lines and JSON events (jobs/runlog.py).
    """
    run_id = run_id or new_run_id(as_of)
    names = ("ingest", "delinquency_classification", *(stage_name(s) for s in stages), "write")
    tracker = RunTracker(run_id, as_of, names, observer or Observer(), progress)
    report = RunReport(run_id=run_id, as_of=as_of, timings=tracker.timings)
    tracker.event("run_started", landing=str(landing), lake=str(lake), stages=list(names))
    try:
        report = _run(spark, config, as_of, landing, lake, stages, tracker, report)
    except BaseException as exc:
        tracker.event(
            "run_failed",
            tracker.current,
            logging.ERROR,
            error_type=type(exc).__name__,
            error_condition=error_condition(exc),
            elapsed_s=tracker.elapsed,
        )
        raise
    finally:
        # py4j keeps every JVM handle in a reference cycle (object <-> its cached methods), so the
        # night's DataFrames -- and through them each broadcast join's hash table, a whole memory
        # page apiece -- stay alive in the driver until Python's cycle collector happens to run.
        # Measured: one test night left 1 GB of a 2 GB driver heap behind; collected, 120 MB. A
        # backfill or a test session runs many nights in one driver, so collect after each.
        gc.collect()
    tracker.event(
        "run_succeeded",
        seconds=tracker.elapsed,
        previous_as_of=report.previous_as_of,
        timings=report.timings,
        output_rows=report.output_rows,
        table_versions=report.table_versions,
    )
    return report


def stage_name(stage: Stage) -> str:
    return getattr(stage, "__name__", "stage").removeprefix("build_")


def error_condition(exc: BaseException) -> str | None:
    """Spark's error condition (e.g. CAST_INVALID_INPUT): names the failure without its values."""
    getter = getattr(exc, "getCondition", None) or getattr(exc, "getErrorClass", None)
    try:
        condition = getter() if callable(getter) else None
    except Exception:  # a Py4J error whose JVM side is gone
        return None
    return str(condition) if condition else None


def _run(
    spark: SparkSession,
    config: AppConfig,
    as_of: dt.date,
    landing: Path,
    lake: Path,
    stages: tuple[Stage, ...],
    tracker: RunTracker,
    report: RunReport,
) -> RunReport:
    run_id = report.run_id
    layout = io.WriteLayout.from_config(config.operations)
    # Structure first: a missing table or column stops here, before anything is written.
    raw = {t.name: io.read_landing(spark, landing, t) for t in LANDING_TABLES}
    with lake_lock(lake, run_id) as stale:
        started = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        if stale is not None:
            tracker.event("stale_lock_taken_over", level=logging.WARNING, abandoned_run_id=stale.get("run_id"))
            io.fail_abandoned(spark, lake, str(stale.get("run_id")), layout)
        previous = io.latest_succeeded(lake, as_of)
        report.previous_as_of = previous.as_of_date if previous else None
        base_entry: dict[str, Any] = {
            "run_id": run_id,
            "as_of_date": as_of,
            "started_at": started,
            "config_hash": config.source_hash,
            "code_version": code_version(),
            "previous_as_of_date": report.previous_as_of,
        }
        io.append_ledger(spark, lake, {**base_entry, "status": "RUNNING"}, layout)
        try:
            with tracker.stage("ingest", "ingest: validating landing rows") as figures:
                report.input_rows = {t.name: io.count_landing(spark, landing, t, raw[t.name]) for t in LANDING_TABLES}

                ingested = ingest(raw, run_id, as_of, settle, settle_partitioned)
                for table in LANDING_TABLES:
                    accepted, refused = checked_counts(ingested, table.name)
                    report.accepted_rows[table.name] = accepted
                    if refused:
                        report.quarantined_rows[table.name] = refused
                broken = unreconciled(report.input_rows, report.accepted_rows, report.quarantined_rows)
                if broken:
                    raise DataQualityError(f"rows neither accepted nor quarantined in {', '.join(broken)}")
                tables = ingested.tables
                quarantine = ingested.quarantine()
                figures.update(
                    input_rows=report.input_rows,
                    accepted_rows=report.accepted_rows,
                    quarantined_rows=report.quarantined_rows,
                )

            with tracker.stage("delinquency_classification", "delinquency and classification") as figures:
                previous_snapshot = None
                if previous is not None and "loan_snapshot" in previous.table_versions:
                    previous_snapshot = io.read_table(
                        spark, lake, LOAN_SNAPSHOT, previous.table_versions["loan_snapshot"]
                    ).where(F.col("as_of_date") == F.lit(previous.as_of_date))
                tier1 = [r["branch_id"] for r in tables["branches"].where(F.col("level") == "TIER1").collect()]
                products = [r["product_code"] for r in tables["products"].collect()]
                params = params_frame(spark, config, [*tier1, None], products)
                loans = loans_on_book(as_of, tables, params)
                # Classification reads the delinquency result several times (signals, schedule).
                delinquent = settle(build_delinquency(as_of, config, tables, loans))
                checks = Observation("snapshot_checks")
                snapshot = settle(
                    build_snapshot(as_of, config, tables, delinquent, previous_snapshot).observe(
                        checks, *snapshot_checks()
                    )
                )
                report.summary = validate_snapshot(snapshot, checks.get)
                history = snapshot.transform(classification_changes(as_of, report.previous_as_of, previous_snapshot))
                figures.update(previous_as_of=report.previous_as_of, summary=report.summary)

            outputs: dict[Table, DataFrame] = {
                QUARANTINE: quarantine,
                LOAN_SNAPSHOT: snapshot,
                CLASSIFICATION_HISTORY: history,
                # Pinned by the ledger like the rest, so the API's borrower lookups match the date.
                BORROWERS: tables["borrowers"].withColumn("as_of_date", F.lit(as_of)),
            }
            context = StageContext(
                spark=spark,
                as_of=as_of,
                run_id=run_id,
                config=config,
                tables=tables,
                snapshot=snapshot,
                previous_as_of=report.previous_as_of,
                previous=lambda table: _previous_rows(spark, lake, previous, table),
                history=lambda table, start, end: io.history(spark, lake, table, start, end),
                params=params,
            )
            for stage in stages:
                name = stage_name(stage)
                with tracker.stage(name, name) as figures:
                    produced = stage(context)
                    for table, frame in produced.items():
                        kept = settle(frame)
                        outputs[table] = kept
                        context.outputs[table.name] = kept
                    figures.update(tables=sorted(t.name for t in produced))
            if INSPECTION_TASKS in outputs:
                report.summary.update(inspection_summary(outputs[INSPECTION_TASKS], outputs[SETTLED_LOANS]))

            with tracker.stage("write", "write: Delta tables") as figures:
                for table, frame in outputs.items():
                    # Most nights every landing row is accepted: nothing to quarantine.
                    empty = table is QUARANTINE and not report.quarantined_rows
                    written = io.write_date(spark, frame, lake, table, as_of, layout, empty=empty)
                    report.table_versions[table.name] = written.version
                    report.output_rows[table.name] = written.rows
                figures.update(output_rows=report.output_rows, table_versions=report.table_versions)
            report.status = "SUCCEEDED"
            io.append_ledger(
                spark,
                lake,
                {
                    **base_entry,
                    "status": "SUCCEEDED",
                    "finished_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
                    "input_rows": report.input_rows,
                    "accepted_rows": report.accepted_rows,
                    "quarantined_rows": report.quarantined_rows,
                    "output_rows": report.output_rows,
                    "table_versions": report.table_versions,
                    "summary": report.summary,
                },
                layout,
            )
            return report
        except BaseException as exc:
            report.status = "FAILED"
            io.append_ledger(
                spark,
                lake,
                {
                    **base_entry,
                    "status": "FAILED",
                    "finished_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
                    "input_rows": report.input_rows,
                    "accepted_rows": report.accepted_rows,
                    "quarantined_rows": report.quarantined_rows,
                    "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:2000],
                },
                layout,
            )
            raise


def _previous_rows(spark: SparkSession, lake: Path, previous: io.SucceededRun | None, table: Table) -> DataFrame | None:
    """A table's rows for the previous successful run's date, at the version that run wrote."""
    if previous is None or table.name not in previous.table_versions:
        return None
    return io.read_table(spark, lake, table, previous.table_versions[table.name]).where(
        F.col("as_of_date") == F.lit(previous.as_of_date)
    )


def print_report(report: RunReport, out: Any = None) -> None:
    out = out or sys.stdout
    s = report.summary
    print(f"run {report.run_id}  as of {report.as_of}  {report.status}", file=out)
    print(f"  previous run's date: {report.previous_as_of or '(none: first run)'}", file=out)
    print(f"  loans on book: {s.get('loans', 0):,}   NPL: {s.get('npl_loans', 0):,}", file=out)
    print("  classes: " + ", ".join(f"{c} {s.get(f'class_{c}', 0):,}" for c in RISK_CLASSES), file=out)
    print("  buckets: " + ", ".join(f"{b} {s.get(f'bucket_{b}', 0):,}" for b in BUCKETS), file=out)
    quarantined = sum(report.quarantined_rows.values())
    print(
        f"  quarantined rows: {quarantined:,}"
        + (f" ({', '.join(f'{k} {v}' for k, v in sorted(report.quarantined_rows.items()))})" if quarantined else ""),
        file=out,
    )
    if "tasks" in s:
        print(f"  inspection tasks: {s['tasks']:,} (overdue {s.get('tasks_overdue', 0):,})", file=out)
    later = ("collection_cases", "agency_placements", "portfolio_metrics", "early_warnings")
    if any(name in report.output_rows for name in later):
        print("  rows: " + ", ".join(f"{n} {report.output_rows.get(n, 0):,}" for n in later), file=out)
    print("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report.timings.items()), file=out)


# Exit codes of the batch commands, one per failure class (README, docs/operations.md).
EXIT_OK = 0
EXIT_UNEXPECTED = 1  # anything else: a bug, Spark or the machine failed (the ledger has the message)
EXIT_USAGE = 2  # the command line or the configuration is refused; nothing ran
EXIT_INPUT = 3  # the landing input is structurally unusable; nothing written
EXIT_LOCKED = 4  # another run (or maintenance) holds the lake; nothing written
EXIT_OUTPUT = 5  # the output broke a table contract; the date is not published


def failure_class(exc: BaseException) -> tuple[int, str]:
    """The exit code of a failure and the event that names its class."""
    from jobs.config import ConfigError
    from jobs.lock import RunLocked

    if isinstance(exc, ConfigError):
        return EXIT_USAGE, "config_refused"
    if isinstance(exc, io.LandingError):
        return EXIT_INPUT, "input_refused"
    if isinstance(exc, RunLocked):
        return EXIT_LOCKED, "lake_locked"
    if isinstance(exc, DataQualityError):
        return EXIT_OUTPUT, "output_refused"
    return EXIT_UNEXPECTED, "failed_unexpectedly"


def run_nightly_command(
    as_of: dt.date,
    landing: Path,
    lake: Path,
    conf: Path,
    profile: str | None,
    log_file: Path | None = None,
    spark_profile: str | None = None,
) -> int:
    """`postloan nightly`: one date; the exit code says which class of failure stopped it."""
    return run_dates_command([as_of], landing, lake, conf, profile, log_file, spark_profile=spark_profile)


def backfill_dates(start: dt.date, end: dt.date, every: str) -> list[dt.date]:
    """The business dates of a backfill, oldest first: every calendar day, or every month-end."""
    if end < start:
        raise ValueError(f"--to {end} is before --from {start}")
    days = [start + dt.timedelta(days=n) for n in range((end - start).days + 1)]
    if every == "month-end":
        return [d for d in days if (d + dt.timedelta(days=1)).day == 1]
    if every == "day":
        return days
    raise ValueError(f"unknown backfill step {every!r} (day or month-end)")


def catch_up_dates(served: list[dt.date], start: dt.date | None, end: dt.date, every: str) -> list[dt.date]:
    """The dates a scheduler missed: every date after the newest served one, up to `end`.

    On a lake that serves nothing up to `end` yet, from `start` (or just `end` without one).
    """
    done = [d for d in served if d <= end]
    if done:
        first = max(done) + dt.timedelta(days=1)
        return backfill_dates(first, end, every) if first <= end else []
    return backfill_dates(start or end, end, every)


def run_dates_command(
    dates: list[dt.date],
    landing: Path,
    lake: Path,
    conf: Path,
    profile: str | None,
    log_file: Path | None = None,
    catch_up: tuple[dt.date | None, str] | None = None,
    spark_profile: str | None = None,
) -> int:
    """Run the batch for each date in order, in one Spark session, stopping at the first failure.

    Dates run oldest first because each run builds on the last successful one before it
    (classification upgrades, metrics periods): a backfill is the nightly runs replayed, and gives
    the same tables they gave. A date after a failure is not run: it would build on a stale state.
    With `catch_up` (start, step), the dates are those the ledger shows missing up to `dates[-1]`.
    """
    from jobs.priority import yield_cpu
    from jobs.spark import build_session

    config = load_config(conf, profile, spark_profile)  # refused: the CLI exits 2 before anything runs
    yield_cpu(config.operations.process.niceness)
    # A command of several dates logs its own start and end under an id of its own.
    command_id = f"backfill-{uuid.uuid4().hex[:10]}" if len(dates) > 1 or catch_up else None
    with event_log(config.operations.log, log_file) as events:
        observer = Observer(console=sys.stdout, events=events)
        spark = build_session(config.spark)
        if catch_up is not None:
            served = [r.as_of_date for r in io.succeeded_runs(lake)]
            try:
                dates = catch_up_dates(served, catch_up[0], dates[-1], catch_up[1])
            except ValueError as exc:
                print(f"postloan: {exc}", file=sys.stderr)
                emit(events, "exit", command_id, None, level=logging.ERROR, exit_code=EXIT_USAGE, failure="usage")
                return EXIT_USAGE
            if not dates:
                print(f"nothing to catch up: {lake} serves every date up to {max(served)}", flush=True)
                emit(events, "exit", command_id, None, exit_code=EXIT_OK, runs=0)
                return EXIT_OK
        if command_id is not None:
            emit(events, "dates_started", command_id, None, dates=[d.isoformat() for d in dates])
        for n, as_of in enumerate(dates, start=1):
            if len(dates) > 1:
                print(f"[{as_of}] date {n} of {len(dates)}", flush=True)
            run_id = new_run_id(as_of)
            try:
                report = run_nightly(spark, config, as_of, landing, lake, run_id, observer=observer)
            except Exception as exc:
                code, event = failure_class(exc)
                print(f"postloan: {as_of}: {_explain(code, run_id, exc)}", file=sys.stderr, flush=True)
                emit(events, "exit", run_id, as_of, level=logging.ERROR, exit_code=code, failure=event)
                if command_id is not None:
                    emit(
                        events, "exit", command_id, None, level=logging.ERROR, exit_code=code, failed_date=as_of, runs=n
                    )
                return code
            print_report(report)
            emit(events, "exit", run_id, as_of, exit_code=EXIT_OK)
        if command_id is not None:
            emit(events, "exit", command_id, None, exit_code=EXIT_OK, runs=len(dates))
    return EXIT_OK


def _explain(code: int, run_id: str, exc: BaseException) -> str:
    """The console line of a failure; an unexpected one is named by type only (see error_condition)."""
    if code == EXIT_INPUT:
        return f"input refused, nothing written: {exc}"
    if code == EXIT_LOCKED:
        return str(exc)
    if code == EXIT_OUTPUT:
        return f"output refused, date not published: {exc}"
    condition = error_condition(exc)
    return (
        f"run {run_id} failed: {type(exc).__name__}{f' [{condition}]' if condition else ''}; "
        "the run ledger's error column has the message"
    )


def previous_month_end(day: dt.date) -> dt.date:
    return day.replace(day=1) - dt.timedelta(days=1)


def run_demo(folder: Path, loans: int, as_of: dt.date, conf: Path, serve: bool) -> int:
    """Generate the sample book, run the batch for last month-end and the date, then serve."""
    from jobs.generate import generate_landing
    from jobs.spark import build_session

    config = load_config(conf)
    spark = build_session(config.spark)
    landing, lake = folder / "landing", folder / "lake"
    marker = landing / f"_generated_{loans}_{as_of.isoformat()}"
    if not marker.exists():
        print(f"generating a sample book of {loans:,} loans as of {as_of} in {landing}")
        generate_landing(spark, loans, as_of, 7, landing, "parquet")
        marker.touch()
    for day in (previous_month_end(as_of), as_of):
        report = run_nightly(spark, config, day, landing, lake, observer=Observer(console=sys.stdout))
        print_report(report)
    print(f"lake: {lake.resolve()}")
    if serve:
        try:
            from api.server import serve_demo
        except ImportError:
            print("API: not available in this build")
            return 0
        spark.stop()
        return int(serve_demo(lake, conf))
    return 0
