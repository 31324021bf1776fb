"""Row-level security, personal-data masking, limits and error masking (in process)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from api.settings import ApiSettings, Limits
from jobs.masking import mask_value
from tests.api import expected
from tests.api.conftest import DATES, HQ, HQ_PII, InProcess, branch
from tests.api.lakes import read_date, serving_runs


def latest_rows(lake: Path, name: str = "loan_snapshot") -> list[dict[str, Any]]:
    _, run = max(serving_runs(lake).items())
    table = read_date(lake, name, run)
    assert table is not None
    return table.to_pylist()


def two_branches(rows: list[dict[str, Any]]) -> tuple[str, str]:
    tier1 = sorted({r["tier1_branch_id"] for r in rows if r["tier1_branch_id"]})
    return tier1[0], tier1[1]


def error_codes(result: Any) -> list[str]:
    return [(e.extensions or {}).get("code") for e in result.errors or []]


# ------------------------------------------------------------------------------------------------
# Row-level security


def test_branch_caller_sees_only_its_subtree_of_loans(api: InProcess, api_lake: Path) -> None:
    rows = latest_rows(api_lake)
    mine, other = two_branches(rows)
    page = api.data("{ loans(first: 500) { totalCount edges { node { loanId branchPath } } } }", branch(mine))["loans"]
    assert page["totalCount"] == sum(expected.in_scope(r, mine) for r in rows) > 0
    assert all(mine in e["node"]["branchPath"] for e in page["edges"])
    # asking for the other branch's subtree gives nothing, never its loans
    page = api.data(
        f'{{ loans(first: 500, filter: {{branchId: "{other}"}}) {{ totalCount edges {{ node {{ loanId }} }} }} }}',
        branch(mine),
    )["loans"]
    assert page == {"totalCount": 0, "edges": []}
    # a filter on an ancestor (head office) does not widen the scope
    head = rows[0]["branch_path"][0]
    page = api.data(f'{{ loans(filter: {{branchId: "{head}"}}) {{ totalCount }} }}', branch(mine))["loans"]
    assert page["totalCount"] == sum(expected.in_scope(r, mine) for r in rows)


def test_branch_caller_cannot_fetch_another_branchs_loan(api: InProcess, api_lake: Path) -> None:
    rows = latest_rows(api_lake)
    mine, other = two_branches(rows)
    theirs = next(r for r in rows if expected.in_scope(r, other))
    query = "query($id: ID!) { loan(loanId: $id) { loanId history { dpd } } }"
    assert api.data(query, branch(mine), {"id": theirs["loan_id"]}) == {"loan": None}
    assert api.data(query, HQ, {"id": theirs["loan_id"]})["loan"]["loanId"] == theirs["loan_id"]


def test_branch_caller_portfolio_never_includes_other_branches(api: InProcess, api_lake: Path) -> None:
    rows = latest_rows(api_lake)
    mine, other = two_branches(rows)
    data = api.data("{ portfolio(groupBy: TIER1_BRANCH) { key loanCount } }", branch(mine))
    assert [r["key"] for r in data["portfolio"]] == [mine]
    data = api.data(f'{{ portfolio(groupBy: BRANCH, filter: {{branchId: "{other}"}}) {{ key }} }}', branch(mine))
    assert data["portfolio"] == []


def test_branch_caller_lists_only_its_subtree_in_every_table(full_api: InProcess, full_lake: Path) -> None:
    rows = latest_rows(full_lake)
    mine, other = two_branches(rows)
    fields = {
        "inspectionTasks": (
            "inspection_tasks",
            "{ inspectionTasks(first: 500) { totalCount edges { node { taskId } } } }",
        ),
        "collectionCases": (
            "collection_cases",
            "{ collectionCases(first: 500) { totalCount edges { node { loanId } } } }",
        ),
        "earlyWarnings": ("early_warnings", "{ earlyWarnings(first: 500) { totalCount edges { node { loanId } } } }"),
        "settledLoans": ("settled_loans", "{ settledLoans(first: 500) { totalCount edges { node { loanId } } } }"),
    }
    for field, (table, query) in fields.items():
        lake = latest_rows(full_lake, table)
        want = [r for r in lake if mine in r["branch_path"]]
        got = full_api.data(query, branch(mine))[field]
        assert got["totalCount"] == len(want), field
        assert len(got["edges"]) == len(want)
        other_query = query.replace("(first: 500)", f'(first: 500, filter: {{branchId: "{other}"}})')
        if field == "settledLoans":
            other_query = query.replace("(first: 500)", f'(first: 500, branchId: "{other}")')
        assert full_api.data(other_query, branch(mine))[field]["totalCount"] == 0, field
    for field, table, query in (
        ("kpiBreaches", "kpi_breaches", "{ kpiBreaches { key } }"),
        ("migrationRates", "migration_rates", "{ migrationRates(groupBy: BRANCH) { key } }"),
        ("rollRates", "roll_rates", "{ rollRates(groupBy: BRANCH) { key } }"),
        ("channelScorecard", "channel_scorecard", "{ channelScorecard { channelId } }"),
    ):
        lake = latest_rows(full_lake, table)
        got = full_api.data(query, branch(mine))[field]
        allowed = [r for r in lake if mine in r["branch_path"]]
        if field == "migrationRates":
            allowed = [r for r in allowed if r["grouping"] == "BRANCH" and r["period_type"] == "MONTH"]
        if field == "rollRates":
            allowed = [r for r in allowed if r["grouping"] == "BRANCH"]
        assert len(got) == len(allowed), field
    # bank-wide rows (HQ grouping) are not a branch caller's
    assert full_api.data("{ migrationRates(groupBy: HQ) { key } }", branch(mine))["migrationRates"] == []


@pytest.mark.parametrize(
    "query",
    [
        "{ vintage { mob } }",
        "{ agencies { agencyId } }",
        '{ quarantine(runId: "x") { totalCount } }',
    ],
)
def test_bank_wide_fields_are_for_headquarters_only(full_api: InProcess, query: str) -> None:
    result = full_api.run(query, branch("T1-01"))
    assert result.data is None
    assert error_codes(result) == ["FORBIDDEN"]


# ------------------------------------------------------------------------------------------------
# Personal data


def test_personal_data_is_masked_without_the_pii_claim(api: InProcess, api_lake: Path) -> None:
    landing = api_lake.parent / "landing" / "borrowers"
    import pyarrow.parquet as pq

    people = {r["borrower_id"]: r for f in landing.rglob("*.parquet") for r in pq.read_table(f).to_pylist()}
    query = "{ loans(first: 20) { edges { node { borrower { borrowerId name idNumber phone masked } } } } }"
    masked = [e["node"]["borrower"] for e in api.data(query, HQ)["loans"]["edges"]]
    clear = [e["node"]["borrower"] for e in api.data(query, HQ_PII)["loans"]["edges"]]
    assert masked and len(masked) == len(clear)
    for m, c in zip(masked, clear, strict=True):
        person = people[c["borrowerId"]]
        assert (c["name"], c["idNumber"], c["phone"], c["masked"]) == (
            person["name"],
            person["id_number"],
            person["phone"],
            False,
        )
        assert m["masked"] is True
        for field, key in (("name", "name"), ("idNumber", "id_number"), ("phone", "phone")):
            assert m[field] == mask_value(key, person[key])
            if person[key]:
                assert m[field] != person[key]
    # a branch token carries its own claim
    mine, _ = two_branches(latest_rows(api_lake))
    for pii in (True, False):
        edges = api.data(query, branch(mine, pii=pii))["loans"]["edges"]
        assert edges and all(e["node"]["borrower"]["masked"] is not pii for e in edges)


# ------------------------------------------------------------------------------------------------
# Limits and errors


def limited(api_lake: Path, **limits: Any) -> InProcess:
    return InProcess(api_lake, replace(ApiSettings(), limits=replace(Limits(), **limits)))


def test_page_size_is_capped(api_lake: Path) -> None:
    client = limited(api_lake, max_page_size=10, default_page_size=5)
    result = client.run("{ loans(first: 11) { totalCount } }")
    assert error_codes(result) == ["BAD_USER_INPUT"]
    assert "at most 10" in result.errors[0].message
    assert len(client.data("{ loans { edges { cursor } } }")["loans"]["edges"]) == 5
    assert len(client.data("{ loans(first: 10) { edges { cursor } } }")["loans"]["edges"]) == 10
    assert client.run("{ loans(first: -1) { totalCount } }").errors


def test_depth_tokens_and_aliases_are_limited_with_visible_messages(api_lake: Path) -> None:
    client = limited(api_lake, max_depth=3, max_tokens=60, max_aliases=2)
    deep = client.run("{ loans { edges { node { borrower { name } } } } }")
    assert deep.errors and "exceeds maximum operation depth" in deep.errors[0].message
    many = client.run("{ a: viewer { role } b: viewer { role } c: viewer { role } }")
    assert many.errors and "aliases" in many.errors[0].message
    long = client.run("{ " + " ".join(f"f{i}: viewer {{ role }}" for i in range(20)) + " }")
    assert long.errors and "token" in long.errors[0].message.lower()
    # introspection (GraphiQL, client libraries) is not cut by the depth limit
    from graphql import get_introspection_query

    assert not limited(api_lake, max_depth=3).run(get_introspection_query(descriptions=True)).errors
    assert not InProcess(api_lake, ApiSettings()).run(get_introspection_query(descriptions=True)).errors


def test_time_budget_stops_a_request(api: InProcess) -> None:
    ctx = api.context(HQ, budget_s=-1.0)
    result = api.run("{ loans(first: 5) { totalCount } }", context=ctx)
    assert error_codes(result) == ["TIME_BUDGET_EXCEEDED"]
    assert result.data is None


def test_validation_errors_are_shown_and_internal_errors_masked(
    api: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = api.run("{ loans { edges { node { noSuchField } } } }")
    assert "noSuchField" in result.errors[0].message
    result = api.run('{ portfolio(groupBy: PRODUCT, asOf: "1999-01-01") { key } }')
    assert error_codes(result) == ["DATA_UNAVAILABLE"] and "1999-01-01" in result.errors[0].message

    import api.schema as schema_module

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals: 110101199001011234")

    monkeypatch.setattr(schema_module, "portfolio_rows", broken)
    result = api.run("{ portfolio(groupBy: PRODUCT) { key } }")
    assert [e.message for e in result.errors] == ["Internal server error"]
    assert "110101" not in str(result.errors[0].formatted)


def test_tampered_cursor_is_an_error_not_a_leak(api: InProcess, api_lake: Path) -> None:
    rows = latest_rows(api_lake)
    mine, _ = two_branches(rows)
    page = api.data("{ loans(first: 3) { pageInfo { endCursor } } }", branch(mine))["loans"]
    cursor = page["pageInfo"]["endCursor"]
    for bad in (cursor[:-3] + ("AAA" if not cursor.endswith("AAA") else "BBB"), "bm90LWEtY3Vyc29y", "!!", "x" * 2000):
        result = api.run("query($a: String) { loans(first: 3, after: $a) { totalCount } }", variables={"a": bad})
        assert error_codes(result) == ["BAD_USER_INPUT"], bad
        assert result.data is None
    # a valid cursor keeps the caller's scope: HQ paging after a branch cursor is fine, and a
    # branch caller never sees rows outside its subtree whatever the cursor
    other = api.data("{ loans(first: 3) { pageInfo { endCursor } } }", HQ)["loans"]["pageInfo"]["endCursor"]
    after = api.data(
        "query($a: String) { loans(first: 500, after: $a) { edges { node { branchPath } } } }",
        branch(mine),
        {"a": other},
    )["loans"]["edges"]
    assert all(mine in e["node"]["branchPath"] for e in after)


def test_unknown_as_of_is_refused_and_default_is_latest(api: InProcess) -> None:
    latest = api.data("{ loans(first: 1) { edges { node { asOfDate } } } }")
    assert latest["loans"]["edges"][0]["node"]["asOfDate"] == DATES[-1].isoformat()
    earlier = api.data(f'{{ loans(first: 1, asOf: "{DATES[0]}") {{ edges {{ node {{ asOfDate }} }} }} }}')
    assert earlier["loans"]["edges"][0]["node"]["asOfDate"] == DATES[0].isoformat()
    missing = DATES[0] - dt.timedelta(days=1)
    result = api.run(f'{{ loans(asOf: "{missing}") {{ totalCount }} }}')
    assert error_codes(result) == ["DATA_UNAVAILABLE"]
