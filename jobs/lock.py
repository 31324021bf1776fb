"""One nightly run at a time per lake: a lock file that a crashed run does not leave stuck.

The lock is a file created atomically (O_EXCL) in the lake holding the owner's host, pid and run
id. A second run is refused while the owner lives; a lock whose owner process is gone (killed,
crashed) is taken over, and the stale RUNNING row it left is then marked FAILED by the new run.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class RunLocked(RuntimeError):
    """Another run holds the lake."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


@contextmanager
def lake_lock(lake: Path, run_id: str) -> Iterator[dict[str, object] | None]:
    """Hold the lake's run lock; yields the stale owner taken over, if any."""
    lake.mkdir(parents=True, exist_ok=True)
    path = lake / "_postloan_run.lock"
    me = {"host": socket.gethostname(), "pid": os.getpid(), "run_id": run_id}
    stale: dict[str, object] | None = None
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _owner(path)
            same_host = owner is not None and owner.get("host") == me["host"]
            pid = owner.get("pid") if owner else None
            if same_host and isinstance(pid, int) and not _alive(pid):
                stale = owner
                path.unlink(missing_ok=True)
                continue
            held_by = owner.get("run_id") if owner else "unknown"
            raise RunLocked(
                f"another nightly run ({held_by}) holds {path}; wait for it to finish "
                "(if its host is gone for good, remove the file)"
            ) from None
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(me, handle)
        break
    else:
        raise RunLocked(f"could not take {path}")
    try:
        yield stale
    finally:
        if (_owner(path) or {}).get("run_id") == run_id:
            path.unlink(missing_ok=True)
