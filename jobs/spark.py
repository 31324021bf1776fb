"""The SparkSession: Delta enabled, jars from jars/lib (fetched by Maven, see the Makefile)."""

from __future__ import annotations

import os
from pathlib import Path

from pyspark.sql import SparkSession

from jobs.config import SparkSettings

REPO_ROOT = Path(__file__).resolve().parent.parent


def delta_jars() -> list[str]:
    """The Delta jars to put on Spark's class path (POSTLOAN_JARS_DIR overrides the folder)."""
    folder = Path(os.environ.get("POSTLOAN_JARS_DIR", REPO_ROOT / "jars" / "lib"))
    jars = sorted(str(p) for p in folder.glob("*.jar"))
    if not jars:
        raise RuntimeError(f"no Delta jars in {folder}: run `make setup` (Maven fetches them)")
    return jars


def build_session(settings: SparkSettings) -> SparkSession:
    """A session for local runs and tests; under spark-submit the submitted settings win."""
    builder = SparkSession.builder.appName(settings.app_name)
    submitted = "SPARK_SUBMIT_OPTS" in os.environ or os.environ.get("SPARK_ENV_LOADED") == "1"
    if settings.master and not submitted:
        builder = builder.master(settings.master)
    if not submitted:
        builder = builder.config("spark.jars", ",".join(delta_jars()))
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
    for key, value in settings.conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
