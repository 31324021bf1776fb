"""Fixtures of the API tests: ONE small lake per session built by the real batch (Spark), read by
the API through delta-rs only; servers on loopback; in-process execution.

`POSTLOAN_API_TEST_LAKE=<dir with landing/ and lake/>` reuses a lake built earlier by the same
batch (it is copied, never modified): a developer shortcut on a busy machine. CI leaves it unset.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from api.auth import Caller, issue_token
from api.context import Context
from api.server import ServerState, create_app
from api.settings import ApiSettings, LakeSettings
from schemas.collections import COLLECTIONS_TABLES
from schemas.inspections import INSPECTION_TABLES
from schemas.metrics import METRICS_TABLES
from schemas.parties import BORROWERS
from tests.api.lakes import serving_runs

REPO = Path(__file__).resolve().parents[2]
LOANS = 300
DATES = (dt.date(2026, 9, 30), dt.date(2026, 10, 31))
SECRET = b"postloan-test-secret-0123456789-abcdefghij"
LATER_TABLES = (*INSPECTION_TABLES, *COLLECTIONS_TABLES, *METRICS_TABLES)

HQ = Caller(subject="hq", role="HQ", branch_id=None, pii=False)
HQ_PII = Caller(subject="hq-pii", role="HQ", branch_id=None, pii=True)


def branch(branch_id: str, pii: bool = False) -> Caller:
    return Caller(subject=f"branch:{branch_id}", role="BRANCH", branch_id=branch_id, pii=pii)


@pytest.fixture(scope="session")
def api_lake(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """The batch's lake for two month-ends: every table written by `run_nightly` itself."""
    root = tmp_path_factory.mktemp("api-lake")
    prebuilt = os.environ.get("POSTLOAN_API_TEST_LAKE")
    if prebuilt:
        shutil.copytree(Path(prebuilt) / "landing", root / "landing")
        shutil.copytree(Path(prebuilt) / "lake", root / "lake", ignore=shutil.ignore_patterns("_postloan_run.lock"))
    else:
        from jobs.config import load_config
        from jobs.generate import generate_landing
        from jobs.pipeline import run_nightly

        spark = request.getfixturevalue("spark")
        config = load_config(REPO / "conf")
        generate_landing(spark, LOANS, DATES[-1], 7, root / "landing", "parquet")
        for day in DATES:
            run_nightly(spark, config, day, root / "landing", root / "lake")
    lake = root / "lake"
    runs = serving_runs(lake)
    assert set(DATES) <= set(runs), f"the batch did not succeed for {DATES}"
    for day in DATES:
        missing = {t.name for t in (BORROWERS, *LATER_TABLES)} - set(runs[day]["table_versions"])
        assert not missing, f"the run for {day} recorded no version of {sorted(missing)}"
    return lake


@pytest.fixture(scope="session")
def full_lake(api_lake: Path) -> Path:
    """The lake with every table of the latest date: the batch writes them all now."""
    return api_lake


@pytest.fixture(scope="session")
def settings() -> ApiSettings:
    return ApiSettings()


class InProcess:
    """Executes queries with schema.execute against a refreshed reader (no HTTP)."""

    def __init__(self, lake: Path, settings: ApiSettings) -> None:
        self.state = ServerState(lake, settings, SECRET)
        self.state.reader.refresh()

    def context(self, caller: Caller, budget_s: float | None = None) -> Context:
        s = self.state.settings
        budget = s.limits.time_budget_ms / 1000 if budget_s is None else budget_s
        return Context(
            caller=caller,
            catalog=self.state.reader.catalog(),
            reader=self.state.reader,
            settings=s,
            codec=self.state.codec,
            deadline=time.monotonic() + budget,
        )

    def run(self, query: str, caller: Caller = HQ, variables: dict[str, Any] | None = None, **kw: Any) -> Any:
        ctx = kw.pop("context", None) or self.context(caller, **kw)
        return asyncio.run(self.state.schema.execute(query, variable_values=variables, context_value=ctx))

    def data(self, query: str, caller: Caller = HQ, variables: dict[str, Any] | None = None) -> Any:
        result = self.run(query, caller, variables)
        assert not result.errors, result.errors
        return result.data


@pytest.fixture(scope="session")
def api(api_lake: Path, settings: ApiSettings) -> Iterator[InProcess]:
    client = InProcess(api_lake, settings)
    yield client
    client.state.reader.close()


@pytest.fixture(scope="session")
def full_api(full_lake: Path, settings: ApiSettings) -> Iterator[InProcess]:
    client = InProcess(full_lake, settings)
    yield client
    client.state.reader.close()


def token(caller: Caller, settings: ApiSettings | None = None) -> str:
    s = settings or ApiSettings()
    return issue_token(SECRET, s.auth, caller.role, caller.branch_id, caller.pii, caller.subject)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_server(lake: Path, settings: ApiSettings) -> Iterator[str]:
    """Serve `lake` with uvicorn on loopback in a thread; yields the GraphQL URL."""
    with serving(lake, settings) as (url, _):
        yield url


@contextmanager
def serving(lake: Path, settings: ApiSettings) -> Iterator[tuple[str, ServerState]]:
    """`running_server`, yielding the server's state too (its reader and response cache)."""
    settings = replace(settings, host="127.0.0.1", port=free_port())
    app = create_app(lake, settings, SECRET)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{settings.port}{settings.path}", app.state.postloan
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="session")
def server_url(full_lake: Path) -> Iterator[str]:
    with running_server(full_lake, ApiSettings(lake=LakeSettings(poll_seconds=0.2))) as url:
        yield url
