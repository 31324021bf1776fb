"""api/offload.py: work run in a child process at a low CPU priority, its result handed back."""

from __future__ import annotations

import os
import time

import numpy as np
import pyarrow as pa
import pytest

from api.offload import ALIGNMENT, IN_BAND_BYTES, OffloadError, run_in_child


def arrays(n: int) -> tuple[np.ndarray, pa.Table, int]:
    """A numpy array and an Arrow table large enough to travel out of band, and the child's
    CPU priority."""
    values = np.arange(n, dtype=np.int64) * 3
    table = pa.table({"id": [f"L{i:09d}" for i in range(n)], "dpd": pa.array(values % 400, pa.int32())})
    return values, table, os.getpriority(os.PRIO_PROCESS, 0)


def fail(message: str) -> None:
    raise KeyError(message)


def leave(code: int) -> None:
    os._exit(code)


def linger(seconds: float) -> None:
    time.sleep(seconds)


def test_large_numpy_and_arrow_results_come_back_whole_and_aligned() -> None:
    n = 200_000  # 1.6 MB of int64: far above IN_BAND_BYTES
    assert n * 8 > IN_BAND_BYTES
    values, table, priority = run_in_child(arrays, n, niceness=0, timeout_s=120)
    assert np.array_equal(values, np.arange(n, dtype=np.int64) * 3)
    assert table.num_rows == n
    assert table.column("id")[0].as_py() == "L000000000" and table.column("id")[n - 1].as_py() == f"L{n - 1:09d}"
    assert table.column("dpd").to_pylist()[:4] == [0, 3, 6, 9]
    # Received into buffers of this process, at Arrow's preferred alignment, and usable as such.
    assert values.ctypes.data % ALIGNMENT == 0
    assert values.flags.writeable
    assert int(pa.compute.sum(table.column("dpd")).as_py()) == int((values % 400).sum())
    assert priority == max(os.getpriority(os.PRIO_PROCESS, 0), 0)


def test_the_child_runs_at_the_priority_asked_never_above_ours() -> None:
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    *_, lowered = run_in_child(arrays, 1, niceness=min(ours + 5, 19), timeout_s=120)
    assert lowered == min(ours + 5, 19)
    *_, kept = run_in_child(arrays, 1, niceness=0, timeout_s=120)
    assert kept == ours  # a child never gets more CPU priority than the server


def test_an_exception_in_the_child_is_raised_here_as_itself() -> None:
    with pytest.raises(KeyError, match="no such table"):
        run_in_child(fail, "no such table", niceness=0, timeout_s=120)


def test_a_child_that_dies_or_hangs_is_reported_and_not_left_running() -> None:
    with pytest.raises(OffloadError, match="exited with code 3"):
        run_in_child(leave, 3, niceness=0, timeout_s=120)
    started = time.monotonic()
    with pytest.raises(OffloadError, match="did not finish in time"):
        run_in_child(linger, 60.0, niceness=0, timeout_s=3)
    assert time.monotonic() - started < 30  # killed at the timeout, not waited for
