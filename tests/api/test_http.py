"""The running server over real HTTP on loopback: a real GraphQL client (gql + httpx), 401s,
GraphiQL only when configured, GraphQL-over-HTTP status codes, body limit, liveness and
readiness, and the graphql-http conformance audit (Node)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from deltalake import write_deltalake
from gql import Client, gql
from gql.transport.httpx import HTTPXAsyncTransport, HTTPXTransport

from api.settings import ApiSettings, LakeSettings
from schemas.lake import RUN_LEDGER
from tests.api import expected
from tests.api.conftest import DATES, HQ, REPO, branch, running_server, token
from tests.api.lakes import contract_schema, read_date, serving_runs, succeed_run

AUDIT = REPO / "api" / "audit"


def auth(caller: object = HQ) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(caller)}"}  # type: ignore[arg-type]


def test_gql_client_over_http_gets_the_lake_figures(server_url: str, full_lake: Path) -> None:
    _, run = max(serving_runs(full_lake).items())
    table = read_date(full_lake, "loan_snapshot", run)
    assert table is not None
    rows = table.to_pylist()
    transport = HTTPXTransport(url=server_url, headers=auth())
    with Client(transport=transport, fetch_schema_from_transport=True) as session:
        result = session.execute(
            gql(
                'query($g: GroupBy!) { portfolio(groupBy: $g, filter: {productCode: "MORTGAGE"}) { key loanCount balance } }'
            ),
            variable_values={"g": "TIER1_BRANCH"},
        )
        want = expected.portfolio([r for r in rows if r["product_code"] == "MORTGAGE"], "TIER1_BRANCH")
        assert {r["key"]: (r["loanCount"], Decimal(r["balance"])) for r in result["portfolio"]} == {
            k: (v["loanCount"], v["balance"]) for k, v in want.items()
        }
        page = session.execute(
            gql(
                "query($n: Int) { loans(first: $n, filter: {minDpd: 1}) { totalCount edges { node { loanId dpd } } } }"
            ),
            variable_values={"n": 5},
        )
        assert page["loans"]["totalCount"] == sum(r["dpd"] >= 1 for r in rows)
        assert [e["node"]["loanId"] for e in page["loans"]["edges"]] == sorted(
            r["loan_id"] for r in rows if r["dpd"] >= 1
        )[:5]


@pytest.mark.anyio
async def test_gql_async_client_as_a_branch_user(server_url: str, full_lake: Path) -> None:
    _, run = max(serving_runs(full_lake).items())
    rows = read_date(full_lake, "loan_snapshot", run).to_pylist()  # type: ignore[union-attr]
    mine = sorted({r["tier1_branch_id"] for r in rows if r["tier1_branch_id"]})[0]
    transport = HTTPXAsyncTransport(url=server_url, headers=auth(branch(mine)))
    async with Client(transport=transport) as session:
        result = await session.execute(gql("{ viewer { role branchId } loans { totalCount } }"))
    assert result["viewer"] == {"role": "BRANCH", "branchId": mine}
    assert result["loans"]["totalCount"] == sum(mine in r["branch_path"] for r in rows)


def test_missing_or_bad_token_is_401_with_a_graphql_error_and_no_data(server_url: str) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic eDp5"}):
        r = httpx.post(server_url, json={"query": "{ loans { totalCount } }"}, headers=headers)
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        body = r.json()
        assert "data" not in body and body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        g = httpx.get(server_url, params={"query": "{ viewer { role } }"}, headers=headers)
        assert g.status_code == 401 and "data" not in g.json()


def test_graphql_over_http_status_codes(server_url: str) -> None:
    headers = {**auth(), "Accept": "application/graphql-response+json"}
    r = httpx.post(server_url, json={"query": "{ nope }"}, headers=headers)
    assert r.status_code == 400 and "data" not in r.json()
    assert r.headers["content-type"].startswith("application/graphql-response+json")
    r = httpx.post(server_url, json={"query": "{ nope }"}, headers=auth())
    assert r.status_code == 200 and r.json()["errors"][0]["message"].startswith("Cannot query field")
    r = httpx.get(server_url, params={"query": "{ viewer { role } }"}, headers=auth())
    assert r.status_code == 200 and r.json() == {"data": {"viewer": {"role": "HQ"}}}
    r = httpx.post(server_url, json={"query": "mutation { x }"}, headers=auth())
    assert r.status_code == 200 and r.json()["errors"]
    r = httpx.post(server_url, content="x" * 70000, headers={**auth(), "Content-Type": "application/json"})
    assert r.status_code == 413
    assert httpx.get(server_url.replace("/graphql", "/healthz")).json()["status"] == "ok"


def test_graphiql_only_when_configured(full_lake: Path) -> None:
    html = {"Accept": "text/html"}
    for graphiql in (False, True):
        with running_server(full_lake, replace(ApiSettings(), graphiql=graphiql)) as url:
            r = httpx.get(url, headers=html)
            if graphiql:
                assert r.status_code == 200 and "graphiql" in r.text.lower()
            else:
                assert r.status_code == 401 and "graphiql" not in r.text.lower()


def test_graphql_http_audit_reports_no_must_failure(server_url: str) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    assert (AUDIT / "node_modules" / "graphql-http").is_dir(), "run `make setup` (npm ci in api/audit)"
    env = {**os.environ, "POSTLOAN_API_URL": server_url, "POSTLOAN_API_TOKEN": token(HQ)}
    done = subprocess.run(
        [node, "audit.mjs"], cwd=AUDIT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, done.stdout + done.stderr
    assert summary["mustFailures"] == [] and summary["ok"] > 40


def test_cached_answers_are_never_shared_between_callers(server_url: str, full_lake: Path) -> None:
    _, run = max(serving_runs(full_lake).items())
    rows = read_date(full_lake, "loan_snapshot", run).to_pylist()  # type: ignore[union-attr]
    first, second = sorted({r["tier1_branch_id"] for r in rows if r["tier1_branch_id"]})[:2]
    query = {"query": "{ loans { totalCount } portfolio(groupBy: HQ) { loanCount } }"}
    answers = {}
    for _ in range(3):  # the second and third rounds are served from the response cache
        for caller in (HQ, branch(first), branch(second)):
            body = httpx.post(server_url, json=query, headers=auth(caller)).json()
            answers.setdefault(caller.subject, set()).add(json.dumps(body, sort_keys=True))
    assert all(len(v) == 1 for v in answers.values())
    totals = {k: json.loads(next(iter(v)))["data"]["loans"]["totalCount"] for k, v in answers.items()}
    assert totals == {
        "hq": len(rows),
        f"branch:{first}": sum(first in r["branch_path"] for r in rows),
        f"branch:{second}": sum(second in r["branch_path"] for r in rows),
    }


# ------------------------------------------------------------------------------------------------
# Liveness and readiness (orchestration probes): no token, no data


def probe(graphql_url: str, name: str) -> httpx.Response:
    return httpx.get(graphql_url.replace("/graphql", f"/{name}"))


def test_healthz_is_liveness_and_readyz_names_the_served_date(server_url: str) -> None:
    live = probe(server_url, "healthz")
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    ready = probe(server_url, "readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "latestBusinessDate": DATES[-1].isoformat(), "businessDates": 2}
    for r in (live, ready):
        assert r.headers["cache-control"] == "no-store"
        assert "LN0" not in r.text and "run" not in r.text.lower()
    # a token is neither needed nor looked at
    assert (
        httpx.get(server_url.replace("/graphql", "/readyz"), headers={"Authorization": "Bearer x"}).status_code == 200
    )


def test_readyz_is_503_until_a_succeeded_run_is_loaded(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    with running_server(lake, ApiSettings(lake=LakeSettings(poll_seconds=0.1))) as url:
        assert probe(url, "healthz").json() == {"status": "ok"}  # alive, with nothing to serve
        r = probe(url, "readyz")
        assert r.status_code == 503
        assert r.json() == {"status": "not-ready", "reason": "no run ledger in the lake yet"}
        # the API itself answers, with no data
        body = httpx.post(url, json={"query": "{ loans { totalCount } }"}, headers=auth()).json()
        assert body["data"] is None and body["errors"][0]["extensions"]["code"] == "DATA_UNAVAILABLE"

        # a ledger with only a FAILED run: still not ready
        write_deltalake(lake / RUN_LEDGER.name, contract_schema(RUN_LEDGER).empty_table())
        succeed_run(lake, DATES[-1], {}, status="FAILED")
        assert wait_for_readyz(url, lambda b: "SUCCEEDED" in b.get("reason", "")) == {
            "status": "not-ready",
            "reason": "no SUCCEEDED nightly run in the lake yet",
        }
        assert probe(url, "readyz").status_code == 503

        # a SUCCEEDED run (it wrote no tables: an empty book) is picked up without a restart
        succeed_run(lake, DATES[-1], {})
        body = wait_for_readyz(url, lambda b: b["status"] == "ready")
        assert body == {"status": "ready", "latestBusinessDate": DATES[-1].isoformat(), "businessDates": 1}
        assert probe(url, "readyz").status_code == 200


def wait_for_readyz(url: str, done: Callable[[dict[str, Any]], bool], seconds: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        body: dict[str, Any] = probe(url, "readyz").json()
        if done(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.1)
