"""Work done in a child process at a low CPU priority, its result handed back ready to use.

Building a 1M-loan business date for serving (its loan book, borrowers, work lists, metrics and
loan details: api/lake.py) costs about 12 s of CPU. Done in the server's own threads, that work
took cores and the interpreter lock from the requests answered meanwhile: in a soak at 300
requests a second, the minute of a swap had a p99 of about 100 ms against 2-7 ms otherwise
(docs/api.md, "The swap window"). In a child process at the lowest priority it takes only the CPU
the server leaves, and the server only receives the result.

The result is pickled (protocol 5) with its large buffers (numpy and Arrow arrays) out of band:
the child writes them into an anonymous shared-memory file (memfd) and passes its descriptor over
a socket; this process maps it and wraps the buffers where they lie. No copy, no page to zero
here: the server spends a mapping and the unpickling of the small object graph around the
buffers (codes, dictionaries, small arrays), not the build.
"""

from __future__ import annotations

import mmap
import os
import pickle
import socket
import struct
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from jobs.priority import yield_cpu

T = TypeVar("T")

# Smaller buffers travel inside the pickle: a loan book has thousands of tiny per-branch arrays,
# and one read each would cost more than the copy.
IN_BAND_BYTES = 1 << 16
# Arrow prefers buffers aligned to 64 bytes (SIMD kernels); each starts at such an offset of the
# shared file, which is mapped at a page boundary.
ALIGNMENT = 64
_LENGTH = struct.Struct("!Q")


class OffloadError(RuntimeError):
    """The child process failed or exited before handing its result over."""


def run_in_child(function: Callable[..., T], *args: Any, niceness: int, timeout_s: float) -> T:
    """`function(*args)` in a fresh Python process at CPU priority `niceness` (never above this
    process's); its result, or its exception, comes back here. `function` must be a module-level
    function and `args` picklable. Raises OffloadError when the child dies, or takes longer than
    `timeout_s` (then it is killed)."""
    ours, theirs = socket.socketpair()
    # A fresh interpreter running this module, not multiprocessing: fork would copy the server's
    # threads (and Arrow's and Polars' pools) in whatever state they were in, and spawn imports
    # the parent's main module again, which a script without a main guard does not survive.
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    with ours:
        try:
            child = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno()), str(niceness)],
                pass_fds=[theirs.fileno()],
                env=environment,
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        try:
            ours.settimeout(timeout_s)
            _send(ours, (function, args))
            try:
                outcome, result = _receive(ours)
            except TimeoutError as exc:
                raise OffloadError(f"the child process running {_name(function)} did not finish in time") from exc
            except (EOFError, OSError) as exc:  # the child closed its end early: it died
                try:
                    reason = f"exited with code {child.wait(timeout=10)}"
                except subprocess.TimeoutExpired:
                    reason = "closed its socket and did not exit"
                raise OffloadError(f"the child process running {_name(function)} {reason}") from exc
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()
    if outcome == "error":
        raise result
    return result  # type: ignore[no-any-return]


def _name(function: Callable[..., Any]) -> str:
    return getattr(function, "__qualname__", repr(function))


def _serve_parent(descriptor: int, niceness: int) -> None:
    """The child's side: lower the priority, read the call, run it, send the outcome back."""
    # Before the call is read: unpickling it imports the function's modules (Arrow, Polars,
    # delta-rs: about a second of CPU), which at the server's priority took the cores from its
    # requests just as the new date began to load.
    yield_cpu(niceness)
    with socket.socket(fileno=descriptor) as sock:
        function, args = _receive(sock)
        try:
            message: tuple[str, Any] = ("ok", function(*args))
        except Exception as exc:
            message = ("error", portable(exc))
        _send(sock, message)


def portable(exc: BaseException) -> BaseException:
    """The exception itself if it survives pickling, else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return RuntimeError(text)
    return exc


def _send(sock: socket.socket, value: Any) -> None:
    """Pickle `value` to the socket; its large buffers go in a shared file whose descriptor follows."""
    out_of_band: list[pickle.PickleBuffer] = []

    def in_band(buffer: pickle.PickleBuffer) -> bool:
        if buffer.raw().nbytes < IN_BAND_BYTES:
            return True
        out_of_band.append(buffer)
        return False

    payload = pickle.dumps(value, protocol=5, buffer_callback=in_band)
    spans: list[tuple[int, int]] = []
    end = 0
    for buffer in out_of_band:
        start = -(-end // ALIGNMENT) * ALIGNMENT
        end = start + buffer.raw().nbytes
        spans.append((start, end))
    header = pickle.dumps((payload, spans, end), protocol=5)
    sock.sendall(_LENGTH.pack(len(header)))
    sock.sendall(header)
    if not end:
        return
    descriptor = _shared_file()
    try:
        os.ftruncate(descriptor, end)
        with mmap.mmap(descriptor, end) as shared:
            for buffer, (start, stop) in zip(out_of_band, spans, strict=True):
                shared[start:stop] = buffer.raw()
        socket.send_fds(sock, [b"\0"], [descriptor])
    finally:
        os.close(descriptor)


def _shared_file() -> int:
    """An anonymous file in memory (memfd, Linux); elsewhere an unlinked temporary file."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("postloan-offload", os.MFD_CLOEXEC)
    with tempfile.TemporaryFile() as file:  # pragma: no cover - not Linux
        return os.dup(file.fileno())


def _receive(sock: socket.socket) -> Any:
    (length,) = _LENGTH.unpack(_read(sock, bytearray(_LENGTH.size)))
    payload, spans, size = pickle.loads(_read(sock, bytearray(length)))
    if not size:
        return pickle.loads(payload)
    _, descriptors, _, _ = socket.recv_fds(sock, 1, 1)
    if len(descriptors) != 1:
        raise EOFError("the other process sent no shared file")
    try:
        # The mapping lives as long as an array of the date refers to it.
        shared = mmap.mmap(descriptors[0], size, flags=mmap.MAP_SHARED)
    finally:
        os.close(descriptors[0])
    # Every page mapped here, once, rather than a page at a time by the first requests that touch
    # the new date: a read of one byte a page, by numpy, which lets go of the interpreter lock for
    # the pass. MAP_POPULATE did the same in mmap(), with the lock held: 84 ms for a 1M-loan
    # date, every request waiting (docs/api.md, "The swap window, third part").
    np.frombuffer(shared, dtype=np.uint8)[:: mmap.PAGESIZE].max()
    view = memoryview(shared)
    return pickle.loads(payload, buffers=[view[start:stop] for start, stop in spans])


def _read(sock: socket.socket, into: bytearray) -> bytearray:
    got = 0
    with memoryview(into) as view:
        while got < len(into):
            n = sock.recv_into(view[got:])
            if n == 0:
                raise EOFError("the other process closed its socket early")
            got += n
    return into


if __name__ == "__main__":
    _serve_parent(int(sys.argv[1]), int(sys.argv[2]))
