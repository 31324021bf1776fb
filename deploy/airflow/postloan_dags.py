"""Airflow DAGs for postloan (a deploy file: Airflow is not a dependency of the project).

`postloan_nightly` runs the batch for each business date with spark-submit, one date at a time
and in order: a date builds on the last successful date before it, so `max_active_runs=1` and
`depends_on_past=True` keep a failed date from being overtaken. `catchup=True` runs the nights
the scheduler missed (scheduler down, DAG paused), oldest first, when it comes back.

The run for the interval [D 02:00, D+1 02:00) starts at D+1 02:00 with `ds` = D: the business
date is the day before the night it runs, as in the cron example.

Backfill of a range (reruns the dates in order, exactly as their nightly runs):
    airflow dags backfill --start-date 2026-10-01 --end-date 2026-10-31 postloan_nightly   # Airflow 2
    airflow backfill create --dag-id postloan_nightly --from-date 2026-10-01 --to-date 2026-10-31 \
        --reprocessing-behavior completed --max-active-runs 1                                 # Airflow 3
or, without Airflow, `postloan backfill --from 2026-10-01 --to 2026-10-31 ...` (same result).

`postloan_maintain` runs `postloan maintain` weekly. It takes the lake lock like a nightly run,
so the two never race; if the nightly run holds the lake, maintenance exits 4 and is retried.

Exit codes (docs/operations.md): 0 ok, 1 unexpected, 2 configuration, 3 input refused,
4 lake locked, 5 output refused. SparkSubmitOperator fails the task on any non-zero code; the
retries are meant for 4 (and a transient cluster failure); 3 and 5 need a person.
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow import DAG
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

# Where the installed package, its configuration, the Delta jars and the data live on the cluster
# (docs/cluster.md, "What to package"): the entry file, the `postloan bundle` zip, jars/lib.
APP = "/opt/postloan"
CONF = "/etc/postloan/conf"  # conf/ with `spark: cluster` in postloan.yaml
LANDING = "/data/landing"  # a file system the driver mounts: the lake lock is a file in the lake
LAKE = "/data/lake"
# The jars `make setup` fetches into jars/lib (jars/pom.xml); a test keeps this list in step.
DELTA_JARS = (
    "delta-kernel-api-4.4.0.jar",
    "delta-kernel-defaults-4.4.0.jar",
    "delta-kernel-unitycatalog-4.4.0.jar",
    "delta-spark_4.2_2.13-4.4.0.jar",
    "delta-storage-4.4.0.jar",
)
SPARK_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}

default_args = {
    "owner": "postloan",
    "depends_on_past": True,
    "retries": 3,
    "retry_delay": dt.timedelta(minutes=20),
    "execution_timeout": dt.timedelta(hours=6),
}


def postloan_task(command: str, *args: str) -> SparkSubmitOperator:
    """`postloan COMMAND ARGS --conf CONF` under spark-submit: the entry file of its own folder (run
    from jobs/ it would import jobs/io.py as the standard library's io), the code zip, the jars."""
    return SparkSubmitOperator(
        task_id=command,
        conn_id="spark_default",
        name=f"postloan-{command}-{{{{ ds_nodash }}}}",
        application=f"{APP}/jobs/submit/postloan.py",
        application_args=[command, *args, "--conf", CONF],
        py_files=f"{APP}/dist/postloan-jobs.zip",
        jars=",".join(f"{APP}/jars/lib/{jar}" for jar in DELTA_JARS),
        conf=SPARK_CONF,
    )


with DAG(
    dag_id="postloan_nightly",
    description="Post-loan nightly batch for the business date ds",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai"),
    catchup=True,
    max_active_runs=1,
    default_args=default_args,
    tags=["postloan"],
) as nightly_dag:
    postloan_task("nightly", "--as-of", "{{ ds }}", "--landing", LANDING, "--lake", LAKE)

with DAG(
    dag_id="postloan_maintain",
    description="OPTIMIZE and Z-order recent dates, re-pin them, VACUUM (docs/operations.md)",
    schedule="0 5 * * 0",
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    default_args={**default_args, "depends_on_past": False, "retries": 6},
    tags=["postloan"],
) as maintain_dag:
    postloan_task("maintain", "--lake", LAKE)
