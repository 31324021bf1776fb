"""Where a night's CPU went inside the JVM, from a Java Flight Recorder recording.

    PYSPARK_SUBMIT_ARGS="--driver-java-options -XX:StartFlightRecording=filename=/tmp/night.jfr,settings=profile pyspark-shell" \
        .venv/bin/python bench/bench_nightly.py --loans 1000000 --month-ends 2 --core-only --resume --keep --workdir W
    .venv/bin/python bench/jfr_profile.py /tmp/night.jfr [--top 30] [--share Kryo.reset --share Decimal.compare]

Local mode runs the executors inside the driver's JVM, so the recording samples every task. The
Spark event log (`bench/sql_profile.py`) says which execution took the time; this says which code
inside it: the methods most often on top of the stack (self time), and for each `--share` the
fraction of samples with that text anywhere in the stack (inclusive time). Costs no Spark metric
names were found this way: Kryo's reset after every settled row, and decimal comparisons through
BigDecimal (docs/benchmarks.md, "Kryo's bookkeeping per row, and the amount bound").

`--compilations` adds what the JIT spent compiling (the recording's compilations of 100 ms or
more, by compiler; the largest; why C2 gave up on some): on two cores the C2 compiler thread runs
beside the two task threads, and Spark generates new classes for every query, so a night's C2
time is work the tasks wait for (docs/benchmarks.md, "The JIT's share of the night").
Needs the JDK's `jfr` tool on the PATH. Nothing here is a test. `--driver-java-options` replaces
the class archive's option that `build_session` gives the driver: to profile the night as it runs,
add `-XX:SharedArchiveFile=jars/lib/postloan.jsa -Xlog:cds=off -Xlog:cds+dynamic=off` to it.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Where the night's time usually goes: Spark's operators, its storage and shuffle, Delta, Parquet.
DEFAULT_SHARES = (
    "WindowEvaluator",
    "ShuffleWriter",
    "MemoryStore.putIterator",
    "UnsafeExternalRowSorter",
    "BytesToBytesMap",
    "com.esotericsoftware.kryo",
    "toBigDecimal",
    "org.apache.spark.sql.delta",
    "parquet",
)

# A frame: `package.Class.method(Arguments) line: N`; Spark's generated code has no line numbers.
_FRAME = re.compile(r"^\s+(\S+)\([^)]*\)(\s+line:.*)?$")


def _jfr(*args: str) -> str:
    jfr = shutil.which("jfr")
    if jfr is None:
        raise SystemExit("jfr_profile: the JDK's `jfr` tool is not on the PATH")
    return subprocess.run([jfr, "print", *args], check=True, capture_output=True, text=True).stdout


def stacks(recording: Path) -> Iterator[list[str]]:
    """Each execution sample's stack, innermost method first, as `package.Class.method`."""
    printed = _jfr("--events", "jdk.ExecutionSample", "--stack-depth", "64", str(recording))
    stack: list[str] = []
    for line in printed.splitlines():
        if line.startswith("jdk.ExecutionSample"):
            if stack:
                yield stack
            stack = []
            continue
        frame = _FRAME.match(line)
        if frame:
            stack.append(frame.group(1))
    if stack:
        yield stack


def _seconds(duration: str) -> float:
    """An ISO-8601 duration as `jfr print --json` writes it (PT0.103S, PT1M2.5S)."""
    match = re.fullmatch(r"PT(?:(\d+)M)?(?:([\d.]+)S)?", duration)
    if match is None:
        raise ValueError(f"jfr_profile: unexpected duration {duration!r}")
    minutes, seconds = match.groups()
    return 60 * int(minutes or 0) + float(seconds or 0)


def _events(recording: Path, event: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads(_jfr("--json", "--events", event, str(recording)))["recording"]["events"]
    return [e["values"] for e in events]


def print_compilations(recording: Path, top: int) -> None:
    """The JIT's recorded compile time by compiler, the largest compilations, and C2's failures."""
    compiled = [
        (
            _seconds(e["duration"]),
            str(e["compiler"]),
            f"{e['method']['type']['name'].replace('/', '.')}.{e['method']['name']}",
            int(e.get("codeSize") or 0),
        )
        for e in _events(recording, "jdk.Compilation")
    ]
    by_compiler: dict[str, float] = {}
    for seconds, compiler, _, _ in compiled:
        by_compiler[compiler] = by_compiler.get(compiler, 0.0) + seconds
    generated = sum(seconds for seconds, _, method, _ in compiled if ".GeneratedClass$" in method)
    print(f"\ncompilations recorded (100 ms or more, settings=profile): {len(compiled)}")
    for compiler, seconds in sorted(by_compiler.items(), key=lambda item: -item[1]):
        print(f"  {compiler}: {seconds:.1f} s")
    print(f"  of which Spark's generated classes: {generated:.1f} s")
    print("largest:")
    for seconds, compiler, method, size in sorted(compiled, reverse=True)[:top]:
        print(f"  {seconds:5.1f} s  {compiler}  {size / 1024:6.0f} KB  {method}")
    failures = Counter(str(e.get("failureMessage")) for e in _events(recording, "jdk.CompilationFailure"))
    if failures:
        print("failed (the method stays in slower code or is compiled again):")
        for message, count in failures.most_common():
            print(f"  {count:5d}  {message}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recording", type=Path)
    parser.add_argument("--top", type=int, default=30, help="methods to list by self time")
    parser.add_argument("--share", action="append", default=[], help="text to find anywhere in a stack")
    parser.add_argument("--compilations", action="store_true", help="also the JIT's compile time")
    args = parser.parse_args(argv)

    shares = tuple(args.share) or DEFAULT_SHARES
    on_top: Counter[str] = Counter()
    within: Counter[str] = Counter()
    samples = 0
    for stack in stacks(args.recording):
        samples += 1
        on_top[stack[0]] += 1
        whole = "\n".join(stack)
        within.update(text for text in shares if text in whole)
    if not samples:
        print("no execution samples in the recording (was it started with settings=profile?)")
        return 1
    print(f"{samples:,} samples")
    print("\nself (the method on top of the stack):")
    for method, count in on_top.most_common(args.top):
        print(f"  {100 * count / samples:5.1f}%  {method}")
    print("\ninclusive (anywhere in the stack):")
    for text in shares:
        print(f"  {100 * within[text] / samples:5.1f}%  {text}")
    if args.compilations:
        print_compilations(args.recording, 10)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
