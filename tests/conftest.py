"""One SparkSession for the whole suite: local, Delta on, UI off, few shuffle partitions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from jobs.config import SparkSettings
from jobs.spark import build_session

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    settings = SparkSettings(
        master="local[2]",
        app_name="postloan-tests",
        conf={
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.ui.enabled": "false",
            "spark.driver.memory": "3g",
            # A broadcast join's hash table takes a whole page in local mode (32 MB by default at
            # this heap size) however small the table; a night holds dozens until it ends.
            "spark.buffer.pageSize": "2m",
            # Every night compiles the same few hundred generated classes; Spark keeps 100. With
            # room for all of them a second night in the session used a fifth less CPU.
            "spark.sql.codegen.cache.maxEntries": "2000",
            "spark.sql.adaptive.enabled": "false",
            # As conf/spark/local.yaml: settled frames are kept serialized by Kryo, compressed.
            "spark.serializer": "org.apache.spark.serializer.KryoSerializer",
            "spark.kryo.referenceTracking": "false",
            "spark.kryo.pool": "false",
            "spark.rdd.compress": "true",
            "spark.databricks.delta.snapshotPartitions": "2",
            "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
            "spark.sql.sources.partitionOverwriteMode": "static",
        },
    )
    session = build_session(settings)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def conf_dir() -> Path:
    return REPO / "conf"


@pytest.fixture(scope="session")
def realdata_dir() -> Path:
    path = SHARED / "realdata"
    if not path.is_dir():
        pytest.skip("../shared/realdata is not beside the repository")
    return path
