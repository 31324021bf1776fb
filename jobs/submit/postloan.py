"""`postloan` under spark-submit: the same command line, on the submitted cluster.

    spark-submit --master spark://HOST:7077 --py-files dist/postloan-jobs.zip \\
        --jars "$(ls jars/lib/*.jar | paste -sd,)" jobs/submit/postloan.py \\
        nightly --as-of 2026-10-31 --landing /data/landing --lake /data/lake --conf conf --spark-profile cluster

The master, jars and resources come from spark-submit; see docs/cluster.md.
"""

from __future__ import annotations

import sys

from jobs.cli import main

if __name__ == "__main__":
    sys.exit(main())
