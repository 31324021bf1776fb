"""Where a night's CPU went inside the JVM, from a Java Flight Recorder recording.

    PYSPARK_SUBMIT_ARGS="--driver-java-options -XX:StartFlightRecording=filename=/tmp/night.jfr,settings=profile pyspark-shell" \
        .venv/bin/python bench/bench_nightly.py --loans 1000000 --month-ends 2 --core-only --resume --keep --workdir W
    .venv/bin/python bench/jfr_profile.py /tmp/night.jfr [--top 30] [--share Kryo.reset --share Decimal.compare]

Local mode runs the executors inside the driver's JVM, so the recording samples every task. The
Spark event log (`bench/sql_profile.py`) says which execution took the time; this says which code
inside it: the methods most often on top of the stack (self time), and for each `--share` the
fraction of samples with that text anywhere in the stack (inclusive time). Costs no Spark metric
names were found this way: Kryo's reset after every settled row, and decimal comparisons through
BigDecimal (docs/benchmarks.md, "Kryo's bookkeeping per row, and the amount bound"). Needs the
JDK's `jfr` tool on the PATH. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

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

_FRAME = re.compile(r"^\s+(\S+)\(.*line:")


def stacks(recording: Path) -> Iterator[list[str]]:
    """Each execution sample's stack, innermost method first, as `package.Class.method`."""
    jfr = shutil.which("jfr")
    if jfr is None:
        raise SystemExit("jfr_profile: the JDK's `jfr` tool is not on the PATH")
    printed = subprocess.run(
        [jfr, "print", "--events", "jdk.ExecutionSample", "--stack-depth", "64", str(recording)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recording", type=Path)
    parser.add_argument("--top", type=int, default=30, help="methods to list by self time")
    parser.add_argument("--share", action="append", default=[], help="text to find anywhere in a stack")
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
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
