"""A real cluster (issue 7): the nightly job submitted to Spark standalone gives the local lake.

A Master and two Workers (one core each) are started on loopback with `spark-class`, the nightly
job is submitted to them with `spark-submit` exactly as docs/cluster.md says (the code as a
`--py-files` zip, the Delta jars with `--jars`, the cluster Spark settings), and every lake table
is compared, with delta-rs, with what the test's local session wrote for the same book and date.
Both lakes hold the same earlier month-end (run locally once, then copied), so the submitted run
builds on a previous run as a real night does. Only the run id and the ledger's timestamps may
differ. Every process started here is in a process group of its own and is stopped, checked
gone, before any assertion runs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyspark
import pytest
import yaml
from deltalake import DeltaTable
from pyspark.sql import SparkSession

from jobs.bundle import build_py_files
from jobs.config import load_config
from jobs.generate import generate_landing
from jobs.pipeline import code_version, run_nightly
from jobs.spark import delta_jars
from schemas.registry import LAKE_TABLES

REPO = Path(__file__).resolve().parent.parent
SPARK_HOME = Path(pyspark.__file__).resolve().parent
MONTH_END = dt.date(2026, 9, 30)
AS_OF = dt.date(2026, 10, 31)
LOANS = 300
LOOPBACK = "127.0.0.1"
# Settings given at submit time; the cluster settings file (conf/spark/cluster.yaml) fills in the rest.
SUBMITTED = {
    "spark.sql.shuffle.partitions": "4",
    "spark.databricks.delta.snapshotPartitions": "2",
}
# The ledger columns that name a run or when it ran: the only ones two runs of a date may differ in.
RUN_COLUMNS = ("run_id", "started_at", "finished_at")


# --------------------------------------------------------------------------------------------
# Spark processes on loopback, each in a process group of its own


def spark_env(root: Path) -> dict[str, str]:
    """This machine's environment without any Spark settings of its own, pinned to loopback."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SPARK_", "PYSPARK_", "POSTLOAN_")) and k not in ("PYTHONPATH", "HADOOP_CONF_DIR")
    }
    (root / "spark-conf").mkdir(exist_ok=True)
    return env | {
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_CONF_DIR": str(root / "spark-conf"),  # empty: no stray spark-defaults.conf
        "SPARK_LOCAL_IP": LOOPBACK,
        "SPARK_LOCAL_DIRS": str(root / "spark-local"),
        "SPARK_WORKER_DIR": str(root / "spark-work"),
        "SPARK_DAEMON_MEMORY": "256m",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }


class Process:
    """A Spark command in its own session (so its JVM and any children share one process group),
    its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], root: Path) -> None:
        self.name = name
        self.log = root / f"{name}.log"
        with self.log.open("w", encoding="utf-8") as out:
            self.proc = subprocess.Popen(
                argv, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.pgid = self.proc.pid

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def tail(self, lines: int = 25) -> str:
        return f"--- {self.name} (exit {self.proc.poll()}), last lines:\n" + "\n".join(
            self.text().splitlines()[-lines:]
        )

    def wait_for_line(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text())
            if found:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        pytest.fail(f"{self.name}: no line matching {pattern!r}\n{self.tail()}")

    def stop(self) -> None:
        """SIGTERM the group (a Worker then stops its executors), SIGKILL what is left."""
        for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 20.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace)
            if not self.group_alive(grace):
                return

    def group_alive(self, within: float = 0.0) -> bool:
        """Whether any process of the group is left after `within` seconds."""
        deadline = time.monotonic() + within
        while True:
            try:
                os.killpg(self.pgid, 0)
            except ProcessLookupError:
                return False
            if time.monotonic() >= deadline:
                return True
            time.sleep(0.2)


def spark_class(name: str, main_class: str, args: list[str], env: dict[str, str], root: Path) -> Process:
    return Process(name, [str(SPARK_HOME / "bin" / "spark-class"), main_class, *args], env, root)


def master_state(web_ui: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{web_ui}/json/", timeout=5) as response:  # loopback only
        state: dict[str, Any] = json.load(response)
        return state


def wait_for_workers(web_ui: str, count: int, processes: list[Process], timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            state = master_state(web_ui)
            if sum(w.get("state") == "ALIVE" for w in state.get("workers", [])) >= count:
                return state
        if any(p.proc.poll() is not None for p in processes):
            break
        time.sleep(0.5)
    pytest.fail(f"{count} workers did not register: {state}\n" + "\n".join(p.tail() for p in processes))


# --------------------------------------------------------------------------------------------
# The submitted run and its local reference


@dataclass
class Submitted:
    root: Path
    local_lake: Path
    cluster_lake: Path
    master_url: str
    exit_code: int | None
    driver_output: str
    refused_exit_code: int | None
    refused_output: str
    refused_lake: Path
    events: list[dict[str, Any]]
    apps: list[dict[str, Any]]
    workers: list[dict[str, Any]]
    checkpoints: list[Path]
    left_running: list[str] = field(default_factory=list)

    def failure(self) -> str:
        return f"spark-submit exit {self.exit_code}; driver output:\n" + "\n".join(
            self.driver_output.splitlines()[-40:]
        )


def submit_command(master_url: str, bundle: Path, root: Path, lake: Path, landing: Path, events: Path) -> list[str]:
    """spark-submit of the nightly job as docs/cluster.md shows it, sized for two 1-core workers."""
    settings = {
        **SUBMITTED,
        "spark.driver.host": LOOPBACK,
        "spark.driver.bindAddress": LOOPBACK,
        "spark.ui.enabled": "false",
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        # Reliable checkpoints, as a cluster should have: settle() uses them when this is set.
        "spark.checkpoint.dir": str(root / "checkpoints"),
        # The driver's own account of where tasks ran: one plain JSON-lines file.
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": str(events),
        "spark.eventLog.compress": "false",
        "spark.eventLog.rolling.enabled": "false",
    }
    return [
        str(SPARK_HOME / "bin" / "spark-submit"),
        *("--master", master_url, "--deploy-mode", "client"),
        *("--driver-memory", "1g", "--executor-memory", "512m"),
        *("--executor-cores", "1", "--total-executor-cores", "2"),
        *("--jars", ",".join(delta_jars()), "--py-files", str(bundle)),
        *(arg for key, value in settings.items() for arg in ("--conf", f"{key}={value}")),
        str(REPO / "jobs" / "submit" / "postloan.py"),
        *("nightly", "--as-of", AS_OF.isoformat(), "--landing", str(landing), "--lake", str(lake)),
        *("--conf", str(REPO / "conf"), "--spark-profile", "cluster"),
    ]


@pytest.fixture(scope="module")
def submitted(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory, conf_dir: Path) -> Submitted:
    root = tmp_path_factory.mktemp("cluster")
    landing, local_lake, cluster_lake = root / "landing", root / "local-lake", root / "cluster-lake"
    generate_landing(spark, LOANS, AS_OF, 13, landing, "parquet", bad_rows=0.01)
    config = load_config(conf_dir)
    # The month-end both runs build on: delinquency and classification (the snapshot the date reads).
    assert run_nightly(spark, config, MONTH_END, landing, local_lake, stages=()).status == "SUCCEEDED"
    shutil.copytree(local_lake, cluster_lake)
    assert run_nightly(spark, config, AS_OF, landing, local_lake).status == "SUCCEEDED"
    bundle = build_py_files(root / "dist" / "postloan-jobs.zip")
    for folder in ("events", "events-refused", "checkpoints", "spark-local", "spark-work"):
        (root / folder).mkdir()

    env = spark_env(root)
    processes: list[Process] = []
    try:
        master = spark_class(
            "master",
            "org.apache.spark.deploy.master.Master",
            ["--host", LOOPBACK, "--port", "0", "--webui-port", "0"],
            env,
            root,
        )
        processes.append(master)
        master_url = master.wait_for_line(r"Starting Spark master at (spark://\S+)", 120)[1]
        # The UI names itself by host name; it is bound to loopback, and asked on loopback.
        bound = master.wait_for_line(r"Bound MasterWebUI to (\S+), and started at http://[^:/\s]+:(\d+)", 60)
        assert bound[1] == LOOPBACK, bound[0]
        web_ui = f"http://{LOOPBACK}:{bound[2]}"
        for n in (1, 2):
            worker_args = ["--host", LOOPBACK, "--port", "0", "--webui-port", "0", "--cores", "1", "--memory", "1g"]
            work_dir = ["--work-dir", str(root / "spark-work" / f"worker-{n}"), master_url]
            processes.append(
                spark_class(f"worker-{n}", "org.apache.spark.deploy.worker.Worker", worker_args + work_dir, env, root)
            )
        wait_for_workers(web_ui, 2, processes)

        # A date whose landing folder is missing: refused before anything is written, and the
        # command's exit code (3) is spark-submit's in client mode, for the scheduler to act on.
        refused_lake = root / "refused-lake"
        refused_command = submit_command(
            master_url, bundle, root, refused_lake, root / "no-landing", root / "events-refused"
        )
        refused = Process("spark-submit-refused", refused_command, env, root)
        processes.append(refused)
        try:
            refused_exit_code: int | None = refused.proc.wait(timeout=600)
        except subprocess.TimeoutExpired:
            refused_exit_code = None

        command = submit_command(master_url, bundle, root, cluster_lake, landing, root / "events")
        driver = Process("spark-submit", command, env, root)
        processes.append(driver)
        try:
            # Generous: ~3 minutes on a quiet 2-core machine, but half an hour was seen on a
            # shared one running five other Spark jobs.
            exit_code: int | None = driver.proc.wait(timeout=2700)
        except subprocess.TimeoutExpired:
            exit_code = None
        state = master_state(web_ui)
    finally:
        for process in reversed(processes):
            process.stop()
    events = [json.loads(line) for path in sorted((root / "events").iterdir()) for line in path.open(encoding="utf-8")]
    return Submitted(
        root=root,
        local_lake=local_lake,
        cluster_lake=cluster_lake,
        master_url=master_url,
        exit_code=exit_code,
        driver_output=driver.text(),
        refused_exit_code=refused_exit_code,
        refused_output=refused.text(),
        refused_lake=refused_lake,
        events=events,
        apps=state.get("completedapps", []) + state.get("activeapps", []),
        workers=state.get("workers", []),
        checkpoints=[p for p in (root / "checkpoints").rglob("*") if p.is_file()],
        left_running=[p.name for p in processes if p.group_alive()],
    )


# --------------------------------------------------------------------------------------------
# Reading both lakes with delta-rs


def rows_on(lake: Path, name: str, day: dt.date) -> list[tuple[Any, ...]]:
    """A table's rows for the date, without the column naming the run, in a stable order."""
    table = DeltaTable(str(lake / name)).to_pyarrow_table()
    table = table.filter(pc.equal(table["as_of_date"], pa.scalar(day, pa.date32())))
    names = [n for n in table.column_names if n not in RUN_COLUMNS]
    return sorted((tuple(r[n] for n in names) for r in table.select(names).to_pylist()), key=repr)


def ledger(lake: Path) -> list[dict[str, Any]]:
    """The run ledger without run ids and times, maps as dicts, ordered by date and state."""
    rows = DeltaTable(str(lake / "run_ledger")).to_pyarrow_table().to_pylist()
    kept = [
        {k: dict(v) if isinstance(v, list) and k != "error" else v for k, v in r.items() if k not in RUN_COLUMNS}
        for r in rows
    ]
    order = {"RUNNING": 0, "SUCCEEDED": 1, "FAILED": 2}
    return sorted(kept, key=lambda r: (r["as_of_date"], order[r["status"]]))


# --------------------------------------------------------------------------------------------
# Tests


def test_the_cluster_ran_the_job_on_two_executors_over_loopback_and_stopped(submitted: Submitted) -> None:
    assert submitted.exit_code == 0, submitted.failure()
    assert not submitted.left_running, f"processes left running: {submitted.left_running}"
    assert re.fullmatch(r"spark://127\.0\.0\.1:\d+", submitted.master_url)
    # Both workers registered on loopback; the master saw both submissions end.
    assert len(submitted.workers) == 2
    assert all(w["host"] == LOOPBACK and w["cores"] == 1 for w in submitted.workers), submitted.workers
    assert [(a["name"], a["state"]) for a in submitted.apps] == [("postloan-nightly", "FINISHED")] * 2
    # The driver's own account (the event log): it ran against the master, on two executors,
    # every block manager on loopback, and tasks on both executors, none in the driver.
    environment = next(e for e in submitted.events if e["Event"] == "SparkListenerEnvironmentUpdate")
    properties = dict(environment["Spark Properties"])
    assert properties["spark.master"] == submitted.master_url
    executors = [e for e in submitted.events if e["Event"] == "SparkListenerExecutorAdded"]
    assert len(executors) == 2 and {e["Executor Info"]["Host"] for e in executors} == {LOOPBACK}
    managers = [e for e in submitted.events if e["Event"] == "SparkListenerBlockManagerAdded"]
    assert managers and {e["Block Manager ID"]["Host"] for e in managers} == {LOOPBACK}
    tasks = [e for e in submitted.events if e["Event"] == "SparkListenerTaskEnd"]
    ran_on = {t["Task Info"]["Executor ID"] for t in tasks}
    assert ran_on == {e["Executor ID"] for e in executors}, ran_on
    # Reliable checkpoints (spark.checkpoint.dir) cut the lineage between stages, not local ones.
    assert submitted.checkpoints


def test_submitted_settings_win_over_the_cluster_settings_file(submitted: Submitted, conf_dir: Path) -> None:
    assert submitted.exit_code == 0, submitted.failure()
    environment = next(e for e in submitted.events if e["Event"] == "SparkListenerEnvironmentUpdate")
    properties = dict(environment["Spark Properties"])
    cluster = yaml.safe_load((conf_dir / "spark" / "cluster.yaml").read_text(encoding="utf-8"))
    local = yaml.safe_load((conf_dir / "spark" / "local.yaml").read_text(encoding="utf-8"))
    assert set(SUBMITTED) & set(cluster["conf"]), "the test should submit a setting the file also sets"
    for key, value in cluster["conf"].items():
        assert properties.get(key) == SUBMITTED.get(key, value), key
    # Not the local settings file: its driver memory and join threshold are not there.
    assert local["conf"]["spark.driver.memory"] != properties["spark.driver.memory"] == "1g"
    assert "spark.sql.autoBroadcastJoinThreshold" in local["conf"]
    assert "spark.sql.autoBroadcastJoinThreshold" not in properties
    assert properties["spark.app.name"] == cluster["app_name"]


def test_every_lake_table_equals_the_local_run(submitted: Submitted) -> None:
    assert submitted.exit_code == 0, submitted.failure()
    compared = 0
    for table in LAKE_TABLES:
        if table.name == "run_ledger":
            continue
        local_log = submitted.local_lake / table.name / "_delta_log"
        assert (submitted.cluster_lake / table.name / "_delta_log").is_dir() == local_log.is_dir(), table.name
        for day in (MONTH_END, AS_OF):
            if not local_log.is_dir():
                continue
            expected = rows_on(submitted.local_lake, table.name, day)
            assert rows_on(submitted.cluster_lake, table.name, day) == expected, (table.name, day)
            compared += len(expected) if day == AS_OF else 0
    # A comparison of something: the date's snapshot, cases, quarantine and metrics are not empty.
    for name in ("loan_snapshot", "quarantine", "collection_cases", "inspection_tasks", "portfolio_metrics"):
        assert rows_on(submitted.local_lake, name, AS_OF), name
    assert compared > LOANS


def test_the_ledger_records_the_same_run_but_for_its_id_and_times(submitted: Submitted) -> None:
    assert submitted.exit_code == 0, submitted.failure()
    cluster, local = ledger(submitted.cluster_lake), ledger(submitted.local_lake)
    assert [(r["as_of_date"], r["status"]) for r in cluster] == [
        (MONTH_END, "RUNNING"),
        (MONTH_END, "SUCCEEDED"),
        (AS_OF, "RUNNING"),
        (AS_OF, "SUCCEEDED"),
    ]
    # Same counts, same table versions, same rules (config hash) and the same code (the bundle's
    # stamped version equals the checkout's); the date built on the month-end in both.
    assert cluster == local
    assert cluster[-1]["previous_as_of_date"] == MONTH_END
    assert "unknown" not in cluster[-1]["code_version"]


# --------------------------------------------------------------------------------------------
# The --py-files bundle (no Spark needed)


def test_the_bundle_is_reproducible_and_imports_from_the_zip_with_its_code_version(tmp_path: Path) -> None:
    first = build_py_files(tmp_path / "a" / "postloan-jobs.zip")
    second = build_py_files(tmp_path / "b" / "postloan-jobs.zip")
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as bundle:
        names = set(bundle.namelist())
        stamped = bundle.read("jobs/code_version.txt").decode().strip()
    for package in ("jobs", "schemas"):
        modules = {f"{package}/{p.relative_to(REPO / package).as_posix()}" for p in (REPO / package).rglob("*.py")}
        assert modules and modules <= names, package
    assert "jobs/submit/postloan.py" in names and "jobs/sections/__init__.py" in names
    assert stamped == code_version() and "unknown" not in stamped
    # A Python with only the zip on its path (run away from the checkout) imports the batch from
    # it and records the stamped version: no git travels with a zip.
    probe = (
        "import jobs.pipeline as p, schemas.lake as s; print(p.__file__); print(s.__file__); print(p.code_version())"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(first)}
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=True
    ).stdout.split()
    assert out[0].startswith(str(first)) and out[1].startswith(str(first)), out
    assert out[2] == stamped


def test_a_refused_date_gives_spark_submit_the_commands_exit_code_and_writes_nothing(submitted: Submitted) -> None:
    assert submitted.refused_exit_code == 3, submitted.refused_output[-3000:]
    assert "input refused, nothing written" in submitted.refused_output
    assert "no-landing/loans: missing table folder" in submitted.refused_output
    assert not submitted.refused_lake.exists()
