"""CPU priority of a process, for work that shares a host with the API it feeds."""

from __future__ import annotations

import os


def yield_cpu(niceness: int) -> int:
    """Lower this process's CPU priority to `niceness` (never raise it); returns the one in force.

    The nightly batch calls it before its Spark session is built, so the JVM and its Python
    workers inherit it: a local batch on the API's host then takes only the CPU the API leaves
    (docs/operations.md). The API's date loader calls it first thing in its child process
    (api/offload.py).
    """
    current = os.getpriority(os.PRIO_PROCESS, 0)
    return os.nice(niceness - current) if niceness > current else current
