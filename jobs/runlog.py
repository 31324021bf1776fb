"""What a run tells its operators: progress lines on the console and an event log of JSON lines.

Progress is for the person watching: one line as each stage starts and ends, with the stage, the
share of the run's stages done and the seconds elapsed. The event log is for machines (log
shippers, alerting): one JSON object per line with the run id, the business date, the stage, the
event and its figures (counts, seconds, table versions). Neither ever carries personal data: only
names of stages and tables, counts, versions, paths of the bank's folders and the type of an
error (a Spark message can quote a row's values, so it stays in the run ledger).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from jobs.config import LogSettings

RUN_LOGGER = "postloan.run"


def new_run_id(as_of: dt.date) -> str:
    return f"{as_of:%Y%m%d}-{uuid.uuid4().hex[:10]}"


class JsonLines(logging.Formatter):
    """One JSON object per record: ts, level, logger, run_id, as_of, stage, event, figures."""

    def format(self, record: logging.LogRecord) -> str:
        as_of = getattr(record, "as_of", None)
        return json.dumps(
            {
                "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
                "level": record.levelname,
                "logger": record.name,
                "run_id": getattr(record, "run_id", None),
                "as_of": as_of.isoformat() if isinstance(as_of, dt.date) else as_of,
                "stage": getattr(record, "stage", None),
                "event": record.getMessage(),
                "figures": getattr(record, "figures", {}),
            },
            ensure_ascii=False,
            default=str,
        )


@contextmanager
def event_log(settings: LogSettings, file: Path | None = None, name: str = RUN_LOGGER) -> Iterator[logging.Logger]:
    """The event logger for one command: JSON lines to `file`, else the configured file, else stderr.

    The handler lives as long as the command, so a second command in the same process (tests, a
    scheduler calling `main`) writes where its own configuration says.
    """
    target = file or (Path(settings.file) if settings.file else None)
    handler: logging.Handler
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(target, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    logger = logging.getLogger(name)
    logger.setLevel(settings.level)
    logger.propagate = False  # the lines are JSON; a root handler would print them again as text
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        handler.close()


def emit(
    logger: logging.Logger | None,
    event: str,
    run_id: str | None,
    as_of: dt.date | None,
    stage: str | None = None,
    level: int = logging.INFO,
    **figures: Any,
) -> None:
    if logger is not None:
        logger.log(level, event, extra={"run_id": run_id, "as_of": as_of, "stage": stage, "figures": figures})


@dataclass(frozen=True)
class Observer:
    """Where a run reports: progress lines on a console, events to a logger (either may be absent)."""

    console: TextIO | None = None
    events: logging.Logger | None = None


@dataclass
class RunTracker:
    """One run's stages: timing, progress lines, events. `say` gets each stage's message as it starts."""

    run_id: str
    as_of: dt.date | None  # None for work on the whole lake (maintenance)
    stages: tuple[str, ...]
    observer: Observer = field(default_factory=Observer)
    say: Callable[[str], None] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    done: int = 0
    # The stage running now (named in a failure event), None between stages.
    current: str | None = None

    @property
    def elapsed(self) -> float:
        return round(time.perf_counter() - self.started, 1)

    @property
    def percent(self) -> int:
        return 100 * self.done // len(self.stages) if self.stages else 100

    def event(self, event: str, stage: str | None = None, level: int = logging.INFO, **figures: Any) -> None:
        emit(self.observer.events, event, self.run_id, self.as_of, stage, level, **figures)

    def _line(self, text: str) -> None:
        if self.observer.console is not None:
            print(f"[{self.as_of or self.run_id}] {text}", file=self.observer.console, flush=True)

    @contextmanager
    def stage(self, name: str, message: str) -> Iterator[dict[str, Any]]:
        """Time a stage; the caller may add figures (counts) to the yielded dict for the end event."""
        index = self.stages.index(name) + 1 if name in self.stages else self.done + 1
        position = {"stage_index": index, "stages": len(self.stages)}
        self.current = name
        if self.say is not None:
            self.say(message)
        self._line(f"{message}  (stage {index}/{len(self.stages)}, {self.percent}% done, {self.elapsed:.1f} s elapsed)")
        self.event("stage_started", name, **position, percent_done=self.percent, elapsed_s=self.elapsed)
        start = time.perf_counter()
        figures: dict[str, Any] = {}
        yield figures
        seconds = round(time.perf_counter() - start, 3)
        self.timings[name] = seconds
        self.done += 1
        self.current = None
        self._line(f"{name} done in {seconds:.1f} s  ({self.percent}% done, {self.elapsed:.1f} s elapsed)")
        self.event(
            "stage_finished",
            name,
            **position,
            seconds=seconds,
            percent_done=self.percent,
            elapsed_s=self.elapsed,
            **figures,
        )
