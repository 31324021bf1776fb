"""What the nightly pipeline hands to each stage after delinquency and classification.

A stage is a function `(StageContext) -> dict[Table, DataFrame]`: the lake tables it produces for
the business date, each a DataFrame with the table's columns. It reads nothing itself: landing
tables, today's snapshot and earlier lake data come through the context, so it stays a pure
function of DataFrames and configuration that a test can call with hand-made frames.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession

from jobs.config import AppConfig
from schemas.base import Table


@dataclass(frozen=True)
class StageContext:
    spark: SparkSession
    as_of: dt.date
    run_id: str
    config: AppConfig
    # Accepted landing tables by name (schemas/landing.py), typed per contract.
    tables: dict[str, DataFrame]
    # Today's loan_snapshot (schemas/lake.py LOAN_SNAPSHOT), cached.
    snapshot: DataFrame
    # The previous successful run's business date, if any.
    previous_as_of: dt.date | None
    # Rows of a lake table for the previous successful run's date (None on the first run).
    previous: Callable[[Table], DataFrame | None]
    # Rows of a lake table for every date served by a SUCCEEDED run in [start, end), one version each.
    history: Callable[[Table, dt.date, dt.date], DataFrame | None]
    # Resolved per (tier1_branch_id, product_code) parameters: join with jobs.params.with_params.
    params: DataFrame
    # Outputs of stages that ran before this one, by table name (e.g. collections reads tasks).
    outputs: dict[str, DataFrame] = field(default_factory=dict)


Stage = Callable[[StageContext], dict[Table, DataFrame]]


def settle(frame: DataFrame) -> DataFrame:
    """Compute a frame once and cut its lineage, so later stages plan against a leaf.

    Without this, each stage re-plans the whole night (ingest, delinquency, classification) and
    the optimizer's work grows with every join. On a cluster with a checkpoint directory set
    (`spark.checkpoint.dir`), the reliable checkpoint is used; locally, executor storage.
    """
    context = frame.sparkSession.sparkContext
    if context.getCheckpointDir():
        return frame.checkpoint()
    # Serialized (and, with spark.rdd.compress, compressed) rather than as row objects: a 1M-loan
    # night settles 28M instalments and 10M repayments, which as objects overflowed the driver's
    # storage to disk (1 GB spilled before the delinquency, 3.4 GB by the write) and were read back
    # from there by every later stage.
    return frame.localCheckpoint(storageLevel=StorageLevel.MEMORY_AND_DISK)


def settle_partitioned(frame: DataFrame) -> DataFrame:
    """`settle`, keeping the frame's hash partitioning (a loan child's, by loan_id).

    Spark forgets the partitioning of an adaptive plan when it checkpoints it; planned without
    adaptive execution, the checkpoint keeps it, and the delinquency's windows and aggregates by
    loan read the 28M instalments and 10M repayments of a 1M-loan book where they lie instead of
    shuffling them again.
    """
    conf = frame.sparkSession.conf
    adaptive = conf.get("spark.sql.adaptive.enabled")
    conf.set("spark.sql.adaptive.enabled", "false")
    try:
        return settle(frame)
    finally:
        conf.set("spark.sql.adaptive.enabled", adaptive or "true")


def materialize(frame: DataFrame) -> DataFrame:
    """Compute a frame a stage reads several times once: hash-partitioned by loan_id, then settled.

    A checkpoint keeps the partitioning and ordering of the plan it came from, which may name
    columns of that plan; a later persist of the checkpoint (the pipeline persists every output)
    then fails to map them. After the repartition there is no ordering, and the partitioning is
    on loan_id, an output column (which the later joins on loan_id can use).
    """
    return settle(frame.repartition("loan_id"))
