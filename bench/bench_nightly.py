"""Benchmark: generate N loans, run the nightly batch, time it stage by stage.

    .venv/bin/python bench/bench_nightly.py --loans 1000000
    .venv/bin/python bench/bench_nightly.py --loans 1000000 --month-ends 13 --core-history

`--month-ends K` runs the K-1 month-ends before --as-of first (oldest first), so the metrics stage
sees a year of snapshots; with `--core-history` those earlier dates run only delinquency and
classification (the snapshots the metrics read), which is how a lake's history is seeded quickly.
A long history can be seeded on a busy machine and the measured date run later on a quiet one:

    .venv/bin/python bench/bench_nightly.py --loans 1000000 --month-ends 13 --core-history --history-only
    .venv/bin/python bench/bench_nightly.py --loans 1000000 --month-ends 13 --core-history --resume

`--history-only` keeps the book and lake and stops before --as-of; `--resume` reuses them (no
generation) and skips the dates the ledger already shows SUCCEEDED, except --as-of itself.
`--core-only` runs --as-of with the core stages too (issue 2's target: ingest, delinquency and
classification, write). `stored_mb_as_step_began` is what the settled frames held in executor
storage, in memory and spilled to disk, as each step of --as-of began.
`--event-log DIR` turns on Spark's event log and prints, per step of the --as-of run, the bytes
read, shuffled and spilled and the largest task's execution memory (what docs/cluster.md sizes
executors from).
`--spark-profile large` runs with conf/spark/large.yaml (the 10M book on one 24 GB machine).
Prints generation time, each stage's wall time, loans per second and peak memory (resident set
of this process and the Spark JVM together, sampled every 0.2 s). Figures go to docs/benchmarks.md.
Nothing here is a test: the suite never asserts on time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import shutil
import threading
import time
from collections import defaultdict
from pathlib import Path

import psutil
from pyspark.sql import SparkSession

from jobs import io
from jobs.config import load_config
from jobs.generate import generate_landing, parse_product_mix
from jobs.pipeline import STAGES, previous_month_end, run_nightly
from jobs.spark import build_session

REPO = Path(__file__).resolve().parent.parent


class PeakMemory:
    """Peak resident memory of this process and its children (the Spark JVM)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
            self.peak = max(self.peak, total)
            time.sleep(0.2)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def lake_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class StepMarks:
    """When each step of a run began (its progress lines), to attribute Spark stages to steps;
    and what the settled frames held in executor storage (memory, disk) as each step began."""

    def __init__(self, spark: SparkSession | None = None) -> None:
        self.marks: list[tuple[float, str]] = [(time.time() * 1000, "setup")]
        self.spark = spark
        self.stored_mb: dict[str, dict[str, float]] = {}

    def __call__(self, message: str) -> None:
        step = message.split(":")[0]
        self.marks.append((time.time() * 1000, step))
        if self.spark is not None:
            infos = list(self.spark.sparkContext._jsc.sc().getRDDStorageInfo())  # type: ignore[union-attr]
            self.stored_mb[step] = {
                "memory": round(sum(i.memSize() for i in infos) / 2**20, 1),
                "disk": round(sum(i.diskSize() for i in infos) / 2**20, 1),
            }

    def step_at(self, millis: float) -> str | None:
        if millis < self.marks[0][0]:
            return None  # a stage of an earlier date
        return [name for start, name in self.marks if start <= millis][-1]


def shuffle_profile(event_dir: Path, marks: StepMarks) -> dict[str, dict[str, float]]:
    """Per step: MB read from files, shuffled (written), spilled, and the largest task's peak
    execution memory, from the event log of this application."""
    submitted: dict[int, float] = {}
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for path in sorted(event_dir.iterdir()):
        for line in path.open(encoding="utf-8"):
            event = json.loads(line)
            if event["Event"] == "SparkListenerStageSubmitted":
                submitted[event["Stage Info"]["Stage ID"]] = event["Stage Info"].get("Submission Time", 0)
            elif event["Event"] == "SparkListenerTaskEnd" and event.get("Task Metrics"):
                step = marks.step_at(submitted.get(event["Stage ID"], 0))
                if step is None:
                    continue
                m, row = event["Task Metrics"], totals[step]
                row["tasks"] += 1
                row["input_mb"] += m["Input Metrics"]["Bytes Read"] / 2**20
                row["shuffle_write_mb"] += m["Shuffle Write Metrics"]["Shuffle Bytes Written"] / 2**20
                row["spill_disk_mb"] += m["Disk Bytes Spilled"] / 2**20
                row["max_task_peak_mb"] = max(row["max_task_peak_mb"], m["Peak Execution Memory"] / 2**20)
    return {step: {k: round(v, 1) for k, v in row.items()} for step, row in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loans", type=int, default=100_000)
    parser.add_argument("--as-of", type=dt.date.fromisoformat, default=dt.date(2026, 10, 31))
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--conf", type=Path, default=REPO / "conf")
    parser.add_argument("--spark-profile", default=None, help="Spark settings under conf/spark/ (e.g. large)")
    parser.add_argument("--keep", action="store_true", help="keep the generated book and lake")
    parser.add_argument("--month-ends", type=int, default=2, help="month-ends to run, ending with --as-of")
    parser.add_argument("--core-history", action="store_true", help="earlier dates: core stages only")
    parser.add_argument("--core-only", action="store_true", help="every date, --as-of too: core stages only")
    parser.add_argument("--history-only", action="store_true", help="stop before --as-of; keep book and lake")
    parser.add_argument("--resume", action="store_true", help="reuse the kept book and lake; skip dates done")
    parser.add_argument("--event-log", type=Path, default=None, help="Spark event log folder: print bytes per step")
    parser.add_argument(
        "--product-mix",
        type=parse_product_mix,
        default=None,
        help="the book's products as CODE=SHARE,... (default: the generator's own mix)",
    )
    args = parser.parse_args()

    work = args.workdir / f"{args.loans}"
    if not args.resume:
        shutil.rmtree(work, ignore_errors=True)
    landing, lake = work / "landing", work / "lake"
    config = load_config(args.conf, spark_profile=args.spark_profile)
    results: dict[str, object] = {"loans": args.loans, "as_of": args.as_of.isoformat(), "product_mix": args.product_mix}
    spark_settings = config.spark
    if args.event_log is not None:
        args.event_log.mkdir(parents=True, exist_ok=True)
        logged = {
            "spark.eventLog.enabled": "true",
            "spark.eventLog.dir": str(args.event_log.resolve()),
            "spark.eventLog.compress": "false",
            "spark.eventLog.rolling.enabled": "false",
        }
        spark_settings = dataclasses.replace(spark_settings, conf={**spark_settings.conf, **logged})
    marks = StepMarks()
    with PeakMemory() as memory:
        spark = build_session(spark_settings)
        if not args.resume:
            start = time.perf_counter()
            counts = generate_landing(
                spark, args.loans, args.as_of, args.seed, landing, "parquet", product_mix=args.product_mix
            )
            results["generate_seconds"] = round(time.perf_counter() - start, 1)
            results["landing_rows"] = counts
            print(f"generated in {results['generate_seconds']} s: {counts}", flush=True)
        dates = [args.as_of]
        while len(dates) < args.month_ends:
            dates.insert(0, previous_month_end(dates[0]))
        if args.history_only:
            dates.pop()
        if args.resume:
            # Read as the night reads them (delta-rs): with Spark here, the session was warm before
            # the night's timer started, where a scheduled `postloan nightly` pays that inside it.
            done = {run.as_of_date for run in io.succeeded_runs(lake)}
            dates = [day for day in dates if day == args.as_of or day not in done]
        for day in dates:
            start = time.perf_counter()
            core_only = args.core_only or (args.core_history and day != args.as_of)
            if day == args.as_of:
                marks = StepMarks(spark)
            stages = () if core_only else STAGES
            report = run_nightly(spark, config, day, landing, lake, progress=marks, stages=stages)
            seconds = time.perf_counter() - start
            results[f"nightly_{day}"] = {
                "seconds": round(seconds, 1),
                "stages": report.timings,
                "loans_on_book": report.summary.get("loans"),
                "loans_per_second": round((report.summary.get("loans") or 0) / seconds),
                "stages_run": "core" if core_only else "all",
            }
            print(json.dumps({str(day): results[f"nightly_{day}"]}, default=str), flush=True)
        spark.stop()
    if args.event_log is not None:
        results["per_step"] = shuffle_profile(args.event_log, marks)
    results["stored_mb_as_step_began"] = marks.stored_mb
    results["peak_rss_gb"] = round(memory.peak / 2**30, 2)
    results["lake_mb"] = round(lake_size(lake) / 2**20, 1)
    print(json.dumps(results, indent=2, default=str))
    if not (args.keep or args.history_only):
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
