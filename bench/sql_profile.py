"""Where a night's time went, per Spark SQL execution, from a Spark event log.

    .venv/bin/python bench/bench_nightly.py --loans 1000000 --event-log /tmp/events
    .venv/bin/python bench/sql_profile.py /tmp/events/local-*  [--min-seconds 5]

Each settled frame (a stage's output, the delinquency, the classification), each Delta write and
each count is one SQL execution. Per execution: when it started (seconds after the first), its
wall time, the executor task time summed over its jobs (on 2 cores at most twice the wall time),
the size of its physical plan in characters and the operators in it. The executions come in the
pipeline's order, so the large ones can be told apart by their place and their operators: this is
how docs/benchmarks.md attributes the 1M-loan night's time. Nothing here is a test.

    .venv/bin/python bench/sql_profile.py /tmp/events/local-* --operators 123

prints one execution's final physical plan (after adaptive execution) as a tree, each operator with
the SQL metrics its tasks reported: rows out, time in the operator (sort, aggregation build, the
whole-stage code's duration), bytes spilled or shuffled. That is how a large execution's time is
split among its scans, joins, windows and aggregates. A whole-stage code block's "duration" runs
from its first row to its last, including the time its consumer holds it open: not additive.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OPERATORS = re.compile(
    r"\b(Window|SortMergeJoin|BroadcastHashJoin|Exchange|HashAggregate|Generate|Expand|Scan \w+|LocalTableScan)\b"
)


@dataclass
class Execution:
    execution_id: int
    started_ms: int
    description: str
    plan_chars: int
    operators: Counter[str]
    ended_ms: int | None = None
    task_seconds: float = 0.0
    jobs: list[int] = field(default_factory=list)

    @property
    def wall_seconds(self) -> float:
        return 0.0 if self.ended_ms is None else (self.ended_ms - self.started_ms) / 1000


def events(path: Path) -> Iterator[dict[str, Any]]:
    """The events of one event log file (one JSON object a line), in order."""
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            yield json.loads(line)


def read_executions(path: Path) -> list[Execution]:
    """The SQL executions of one event log file, with the task time of the stages they ran."""
    executions: dict[int, Execution] = {}
    execution_of_stage: dict[int, int] = {}
    for event in events(path):
        kind = event["Event"]
        if kind.endswith("SparkListenerSQLExecutionStart"):
            plan = event.get("physicalPlanDescription", "")
            executions[event["executionId"]] = Execution(
                execution_id=event["executionId"],
                started_ms=event["time"],
                description=event.get("description", "")[:60],
                plan_chars=len(plan),
                operators=Counter(OPERATORS.findall(plan)),
            )
        elif kind.endswith("SparkListenerSQLExecutionEnd") and event["executionId"] in executions:
            executions[event["executionId"]].ended_ms = event["time"]
        elif kind == "SparkListenerJobStart":
            owner = (event.get("Properties") or {}).get("spark.sql.execution.id")
            if owner is not None:
                for stage in event.get("Stage IDs", []):
                    execution_of_stage[stage] = int(owner)
        elif kind == "SparkListenerTaskEnd" and event.get("Task Metrics"):
            owner = execution_of_stage.get(event["Stage ID"])
            if owner in executions:
                executions[owner].task_seconds += event["Task Metrics"]["Executor Run Time"] / 1000
    return sorted(executions.values(), key=lambda e: e.started_ms)


# Spark keeps an "average" metric (hash probes per key) as ten times each task's average.
AVERAGE_BASE = 10


@dataclass
class MetricValues:
    """Every SQL metric's total over the tasks and the driver, and how many updates made it."""

    totals: defaultdict[int, float] = field(default_factory=lambda: defaultdict(float))
    updates: defaultdict[int, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, accumulator: int, value: float) -> None:
        self.totals[accumulator] += value
        self.updates[accumulator] += 1


def _plan_and_metrics(path: Path, execution_id: int) -> tuple[dict[str, Any] | None, MetricValues]:
    """The execution's last physical plan (adaptive execution replans it as its stages finish) and
    every SQL metric's values, in one pass over the log."""
    plan = None
    values = MetricValues()
    for event in events(path):
        kind = event["Event"]
        if kind == "SparkListenerTaskEnd":
            for accumulable in (event.get("Task Info") or {}).get("Accumulables", []):
                update = accumulable.get("Update")
                if isinstance(update, (int, float)) or (isinstance(update, str) and update.lstrip("-").isdigit()):
                    values.add(int(accumulable["ID"]), float(update))
        elif kind.endswith("SparkListenerDriverAccumUpdates"):
            for accumulator, value in event.get("accumUpdates", []):
                values.add(int(accumulator), float(value))
        elif event.get("executionId") == execution_id and (
            kind.endswith("SparkListenerSQLExecutionStart") or kind.endswith("SparkListenerSQLAdaptiveExecutionUpdate")
        ):
            plan = event["sparkPlanInfo"]
    return plan, values


def _shown(metric: dict[str, Any], values: MetricValues) -> str:
    kind, accumulator = metric["metricType"], metric["accumulatorId"]
    value = values.totals[accumulator]
    if kind == "average":
        return f"{value / values.updates[accumulator] / AVERAGE_BASE:.1f} (mean of tasks)"
    if kind == "nsTiming":
        return f"{value / 1e9:.1f} s"
    if kind == "timing":
        return f"{value / 1e3:.1f} s"
    if kind == "size":
        return f"{value / 2**20:,.0f} MB"
    return f"{value:,.0f}"


def print_operators(path: Path, execution_id: int) -> int:
    plan, values = _plan_and_metrics(path, execution_id)
    if plan is None:
        print(f"{path}: no execution {execution_id}", file=sys.stderr)
        return 1

    def walk(node: dict[str, Any], depth: int) -> None:
        shown = [
            f"{m['name']} {_shown(m, values)}" for m in node.get("metrics", []) if values.totals.get(m["accumulatorId"])
        ]
        print(f"{'  ' * depth}{node['nodeName']}" + (f"  [{'; '.join(shown)}]" if shown else ""))
        for child in node.get("children", []):
            walk(child, depth + 1)

    walk(plan, 0)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("event_log", type=Path, help="one application's event log file")
    parser.add_argument("--min-seconds", type=float, default=5.0, help="hide shorter executions")
    parser.add_argument("--operators", type=int, default=None, metavar="ID", help="one execution's operators")
    args = parser.parse_args(argv)
    if args.operators is not None:
        return print_operators(args.event_log, args.operators)
    executions = read_executions(args.event_log)
    if not executions:
        print(f"{args.event_log}: no SQL executions", file=sys.stderr)
        return 1
    first = executions[0].started_ms
    totals: defaultdict[str, float] = defaultdict(float)
    for e in executions:
        totals["wall"] += e.wall_seconds
        totals["tasks"] += e.task_seconds
        if e.wall_seconds < args.min_seconds:
            continue
        operators = ", ".join(f"{name} {n}" for name, n in e.operators.most_common())
        print(
            f"{e.execution_id:5d}  t+{(e.started_ms - first) / 1000:7.1f} s  wall {e.wall_seconds:7.1f} s  "
            f"tasks {e.task_seconds:7.1f} s  plan {e.plan_chars:7,d} chars  {e.description}  [{operators}]"
        )
    print(f"{len(executions)} executions: {totals['wall']:.1f} s wall, {totals['tasks']:.1f} s of tasks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
