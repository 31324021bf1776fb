"""Benchmark: generate N loans, run the nightly batch, time it stage by stage.

    .venv/bin/python bench/bench_nightly.py --loans 1000000

Prints generation time, each stage's wall time, loans per second and peak memory (resident set
of this process and the Spark JVM together, sampled every 0.2 s). Figures go to docs/benchmarks.md.
Nothing here is a test: the suite never asserts on time.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import shutil
import threading
import time
from pathlib import Path

import psutil

from jobs.config import load_config
from jobs.generate import generate_landing
from jobs.pipeline import previous_month_end, run_nightly
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loans", type=int, default=100_000)
    parser.add_argument("--as-of", type=dt.date.fromisoformat, default=dt.date(2026, 10, 31))
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--conf", type=Path, default=REPO / "conf")
    parser.add_argument("--keep", action="store_true", help="keep the generated book and lake")
    parser.add_argument("--two-dates", action="store_true", help="also run the previous month-end first")
    args = parser.parse_args()

    work = args.workdir / f"{args.loans}"
    shutil.rmtree(work, ignore_errors=True)
    landing, lake = work / "landing", work / "lake"
    config = load_config(args.conf)
    results: dict[str, object] = {"loans": args.loans, "as_of": args.as_of.isoformat()}
    with PeakMemory() as memory:
        spark = build_session(config.spark)
        start = time.perf_counter()
        counts = generate_landing(spark, args.loans, args.as_of, args.seed, landing, "parquet")
        results["generate_seconds"] = round(time.perf_counter() - start, 1)
        results["landing_rows"] = counts
        dates = [previous_month_end(args.as_of), args.as_of] if args.two_dates else [args.as_of]
        for day in dates:
            start = time.perf_counter()
            report = run_nightly(spark, config, day, landing, lake)
            seconds = time.perf_counter() - start
            results[f"nightly_{day}"] = {
                "seconds": round(seconds, 1),
                "stages": report.timings,
                "loans_on_book": report.summary.get("loans"),
                "loans_per_second": round((report.summary.get("loans") or 0) / seconds),
            }
        spark.stop()
    results["peak_rss_gb"] = round(memory.peak / 2**30, 2)
    results["lake_mb"] = round(lake_size(lake) / 2**20, 1)
    print(json.dumps(results, indent=2, default=str))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
