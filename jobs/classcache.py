"""The driver JVM's class data sharing archive (JDK 17 AppCDS), made once by a small night.

Every night's driver loads, parses and verifies the same thousands of Spark, Delta and Parquet
classes, on the cores the night's work needs (about 7 s of a 1M-loan night on two cores,
docs/benchmarks.md). A JVM can instead map them from an archive that an earlier JVM wrote as it
exited. The archive belongs to one JDK build and one class path, so `make setup` makes it after the
jars are fetched (and the image bakes it); a JVM that does not match it ignores it and loads its
classes as before. `jobs.spark.build_session` gives it to local drivers only: under spark-submit
the submitter owns the driver's JVM options.

    python -m jobs.classcache [--out PATH] [--loans N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from jobs.spark import QUIET_CLASS_SHARING, build_session, class_archive

# The night the archive is learnt from: the core stages of two dates (the second builds on the
# first's state, as every real night does) on a book just big enough for the real plans: the
# classes do not depend on the book's size. The later stages use the same Spark and Delta classes
# (an archive learnt from every stage was 197 MB against 195, and took a minute more to make).
TRAINING_LOANS = 2000
TRAINING_AS_OF = dt.date(2026, 10, 31)


def make_class_archive(out: Path, loans: int = TRAINING_LOANS) -> Path:
    """Run a small two-date night in a driver that archives its classes as it exits, check the
    archive, then put it at `out`.

    The archive is written under a temporary name and moved into place only once a JVM has mapped
    it: a truncated archive (a set-up killed while the JVM was writing it) crashes every JVM
    that is given it.
    """
    out = out.resolve()
    partial = out.with_name(out.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="postloan-classcache-") as folder:
            # After any option build_session gives (pyspark appends these to its launch command),
            # so an archive already in place is not mapped while the new one is made.
            env = _driver_java_options(f"-XX:ArchiveClassesAtExit={partial} {QUIET_CLASS_SHARING}")
            command = [sys.executable, "-m", "jobs.classcache", "--train", folder, "--loans", str(loans)]
            result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not partial.is_file():
            output = (result.stdout + result.stderr).strip().splitlines()[-20:]
            raise RuntimeError("the training night for the class archive failed:\n" + "\n".join(output))
        check_class_archive(partial)
    except RuntimeError:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(out)
    return out


def _driver_java_options(options: str) -> dict[str, str]:
    """This process's environment, with pyspark told to start its driver JVM with `options`."""
    return {**os.environ, "PYSPARK_SUBMIT_ARGS": f"--driver-java-options {shlex.quote(options)} pyspark-shell"}


def check_class_archive(archive: Path) -> None:
    """Refuse an archive that the driver's JVM, launched as pyspark launches it, cannot map whole
    with its checksums verified (a truncated archive, another JDK, another class path)."""
    # -Xshare:on makes the JVM refuse to start rather than quietly run without the archive; a
    # truncated archive crashes it, whose crash report goes to a folder thrown away after.
    with tempfile.TemporaryDirectory(prefix="postloan-classcheck-") as folder:
        options = (
            f"-Xshare:on -XX:+VerifySharedSpaces -XX:SharedArchiveFile={archive} {QUIET_CLASS_SHARING}"
            f" -XX:ErrorFile={folder}/hs_err_%p.log"
        )
        env = _driver_java_options(options)
        probe = "from pyspark.java_gateway import launch_gateway; launch_gateway()"
        check = subprocess.run(
            [sys.executable, "-c", probe], env=env, cwd=folder, capture_output=True, text=True, check=False
        )
    if check.returncode != 0:
        lines = (check.stdout + check.stderr).splitlines()
        detail = [line.strip("# ") for line in lines if "archive" in line.lower() or "SIGBUS" in line][:3]
        raise RuntimeError(f"{archive} does not map: " + (" | ".join(detail) or "the JVM did not start"))


def _train(folder: Path, loans: int) -> None:
    """The training night, then a wait for the JVM to write the archive."""
    from pyspark import SparkContext

    from jobs.cli import DEFAULT_CONF
    from jobs.config import load_config
    from jobs.generate import generate_landing
    from jobs.pipeline import previous_month_end, run_nightly

    config = load_config(DEFAULT_CONF)
    spark = build_session(config.spark)
    landing, lake = folder / "landing", folder / "lake"
    generate_landing(spark, loans, TRAINING_AS_OF, 7, landing, "parquet")
    for day in (previous_month_end(TRAINING_AS_OF), TRAINING_AS_OF):
        run_nightly(spark, config, day, landing, lake, stages=())
    gateway = SparkContext._gateway
    spark.stop()
    # The JVM exits when its stdin closes, and writes the archive on the way out.
    if gateway is not None and getattr(gateway, "proc", None) is not None:
        gateway.proc.stdin.close()
        gateway.proc.wait(timeout=600)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.classcache", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=class_archive(), help="where the archive goes")
    parser.add_argument("--loans", type=int, default=TRAINING_LOANS, help="the training book's size")
    parser.add_argument("--train", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.train is not None:
        _train(args.train, args.loans)
        return 0
    try:
        archive = make_class_archive(args.out, args.loans)
    except RuntimeError as exc:
        print(f"no class archive: {exc}", file=sys.stderr)
        return 1
    print(f"class archive: {archive} ({archive.stat().st_size / 2**20:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
