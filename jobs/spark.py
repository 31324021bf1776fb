"""The SparkSession: Delta enabled, jars from jars/lib (fetched by Maven, see the Makefile).

Run locally, the session is built from the Spark settings file the conf names (conf/spark/).
Under spark-submit the JVM already runs with the submitted master, jars and resources; the
settings file then only fills in what the submitter did not set (docs/cluster.md).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema

from jobs.config import SparkSettings

REPO_ROOT = Path(__file__).resolve().parent.parent


# The JVM reports on stdout every class it leaves out of a class archive and, on a mismatch, that
# it ignores one: neither is the night's business, and a mismatch only costs the time it saves.
QUIET_CLASS_SHARING = "-Xlog:cds=off -Xlog:cds+dynamic=off"


def jars_folder() -> Path:
    """Where set-up put the Delta jars and the class archive (POSTLOAN_JARS_DIR overrides it)."""
    return Path(os.environ.get("POSTLOAN_JARS_DIR", REPO_ROOT / "jars" / "lib"))


def class_archive() -> Path:
    """The driver JVM's class data sharing archive (jobs/classcache.py makes it)."""
    return jars_folder() / "postloan.jsa"


def class_sharing_options(archive: Path) -> str:
    """The driver JVM options that map the archive's classes instead of loading them."""
    return f"-XX:SharedArchiveFile={archive} {QUIET_CLASS_SHARING}"


def with_class_sharing(conf: Mapping[str, str], archive: Path) -> dict[str, str]:
    """The settings with the driver JVM mapping the class archive, when set-up made one."""
    if not archive.is_file():
        return dict(conf)
    options = f"{conf.get('spark.driver.extraJavaOptions', '')} {class_sharing_options(archive)}".strip()
    return {**conf, "spark.driver.extraJavaOptions": options}


def delta_jars() -> list[str]:
    """The Delta jars to put on Spark's class path."""
    folder = jars_folder()
    jars = sorted(str(p) for p in folder.glob("*.jar"))
    if not jars:
        raise RuntimeError(f"no Delta jars in {folder}: run `make setup` (Maven fetches them)")
    return jars


def under_spark_submit() -> bool:
    """Whether spark-submit started this driver (its JVM is up before any session is built)."""
    # spark-submit hands the Python driver its JVM's gateway port, on YARN and Kubernetes too;
    # its launch scripts mark the environment they prepared.
    return (
        "PYSPARK_GATEWAY_PORT" in os.environ
        or "SPARK_SUBMIT_OPTS" in os.environ
        or os.environ.get("SPARK_ENV_LOADED") == "1"
    )


def submitted_keys() -> frozenset[str]:
    """The settings spark-submit gave the driver's JVM (`--conf`, `--executor-memory`, ...)."""
    from pyspark import SparkConf, SparkContext

    # Connects to the JVM spark-submit started; SparkConf() then reads its submitted properties.
    SparkContext._ensure_initialized()
    return frozenset(key for key, _ in SparkConf().getAll())


def profile_conf(settings: SparkSettings, submitted: Collection[str]) -> dict[str, str]:
    """The settings file's values the submitter did not set: what was submitted wins, so one
    settings file serves a 10k and a 100M-loan book, each sized at submit time."""
    return {key: value for key, value in settings.conf.items() if key not in submitted}


def build_session(settings: SparkSettings) -> SparkSession:
    """A session for local runs and tests; under spark-submit the submitted settings win."""
    builder = SparkSession.builder.appName(settings.app_name)
    submitted = under_spark_submit()
    if settings.master and not submitted:
        builder = builder.master(settings.master)
    if not submitted:
        builder = builder.config("spark.jars", ",".join(delta_jars()))
    # Under spark-submit the driver's JVM is already running, with the submitter's options.
    conf = profile_conf(settings, submitted_keys()) if submitted else with_class_sharing(settings.conf, class_archive())
    for key, value in conf.items():
        builder = builder.config(key, value)
    # Not the submitter's to change: Delta is the lake's format, business dates are UTC dates.
    builder = (
        builder.config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.session.timeZone", "UTC")
        # Readers time-travel to the versions the run ledger pins (previous snapshot, a year of
        # history), which may be older than delta.deletedFileRetentionDuration. Delta refuses that
        # by default, because a VACUUM may have deleted their files; here the only VACUUM is
        # `postloan maintain`'s, which keeps every pinned version's files (docs/operations.md).
        .config("spark.databricks.delta.vacuum.enforceTimeTravelWithinDeletedFileRetentionDuration", "false")
    )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def local_frame(spark: SparkSession, rows: Iterable[Sequence[Any]], schema: T.StructType | str) -> DataFrame:
    """Rows the driver built (values in the schema's order; the schema a StructType or DDL text)
    as a DataFrame, handed to the JVM as an Arrow table.

    Python rows would be unpickled by Spark's Python worker, which the first such frame of a night
    starts (1.3-3.7 s measured, before the run ledger's RUNNING row could be written); Arrow needs
    no worker. Timestamps are UTC, as the session's time zone (`build_session`).
    """
    if isinstance(schema, str):
        parsed = T.DataType.fromDDL(schema)
        assert isinstance(parsed, T.StructType), schema
        schema = parsed
    names = schema.fieldNames()
    records = [dict(zip(names, row, strict=True)) for row in rows]
    table = pa.Table.from_pylist(records, schema=to_arrow_schema(schema, timezone="UTC"))
    return spark.createDataFrame(table, schema)
