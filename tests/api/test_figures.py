"""Every figure the API returns, checked against the Delta tables read independently (delta-rs,
the ledger's serving rule re-derived in tests/api/lakes.py, sums in Python Decimal)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.api import expected
from tests.api.conftest import DATES, HQ, InProcess, branch
from tests.api.lakes import read_date, serving_runs

GROUPINGS = ("HQ", "TIER1_BRANCH", "TIER2_BRANCH", "BRANCH", "PRODUCT", "CHANNEL", "OFFICER")


def snapshot(lake: Path, day: dt.date) -> list[dict[str, Any]]:
    table = read_date(lake, "loan_snapshot", serving_runs(lake)[day])
    assert table is not None
    return table.to_pylist()


def assert_portfolio(api_rows: list[dict[str, Any]], want: dict[str, dict[str, Any]]) -> None:
    got = expected.api_portfolio(api_rows)
    assert set(got) == set(want)
    for key, figures in want.items():
        for name, value in figures.items():
            if name in ("overdueRatio", "nplRatio") and value is not None:
                assert got[key][name] == pytest.approx(value, abs=1e-6), (key, name)
            else:
                assert got[key][name] == value, (key, name)


def portfolio_query(group_by: str, extra: str = "") -> str:
    return f"{{ portfolio(groupBy: {group_by}{extra}) {{ {expected.PORTFOLIO_FIELDS} }} }}"


@pytest.mark.parametrize("grouping", GROUPINGS)
def test_portfolio_figures_equal_sums_of_the_snapshot(api: InProcess, api_lake: Path, grouping: str) -> None:
    rows = snapshot(api_lake, DATES[-1])
    data = api.data(portfolio_query(grouping))
    assert_portfolio(data["portfolio"], expected.portfolio(rows, grouping))


@pytest.mark.parametrize("grouping", ["TIER1_BRANCH", "PRODUCT", "OFFICER"])
def test_portfolio_as_of_an_earlier_date_reads_that_date(api: InProcess, api_lake: Path, grouping: str) -> None:
    rows = snapshot(api_lake, DATES[0])
    data = api.data(portfolio_query(grouping, f', asOf: "{DATES[0].isoformat()}"'))
    assert_portfolio(data["portfolio"], expected.portfolio(rows, grouping))
    assert {r["key"] for r in data["portfolio"]}


def test_branch_caller_portfolio_counts_only_its_subtree(api: InProcess, api_lake: Path) -> None:
    rows = snapshot(api_lake, DATES[-1])
    tier1 = sorted({r["tier1_branch_id"] for r in rows if r["tier1_branch_id"]})[0]
    mine = [r for r in rows if expected.in_scope(r, tier1)]
    for grouping in GROUPINGS:
        data = api.data(portfolio_query(grouping), branch(tier1))
        assert_portfolio(data["portfolio"], expected.portfolio(mine, grouping))


def test_portfolio_filters_match_the_snapshot(api: InProcess, api_lake: Path) -> None:
    rows = snapshot(api_lake, DATES[-1])
    product = max({r["product_code"] for r in rows}, key=lambda p: sum(r["product_code"] == p for r in rows))
    tier2 = sorted({r["tier2_branch_id"] for r in rows if r["tier2_branch_id"]})[0]
    officer = rows[0]["officer_id"]
    cases = [
        (f'{{productCode: "{product}"}}', [r for r in rows if r["product_code"] == product]),
        (f'{{branchId: "{tier2}"}}', [r for r in rows if expected.in_scope(r, tier2)]),
        (
            f'{{branchId: "{tier2}", productCode: "{product}"}}',
            [r for r in rows if expected.in_scope(r, tier2) and r["product_code"] == product],
        ),
        (f'{{officerId: "{officer}"}}', [r for r in rows if r["officer_id"] == officer]),
        ('{productCode: "NO-SUCH-PRODUCT"}', []),
    ]
    for condition, members in cases:
        for grouping in ("BRANCH", "PRODUCT", "HQ"):
            data = api.data(portfolio_query(grouping, f", filter: {condition}"))
            assert_portfolio(data["portfolio"], expected.portfolio(members, grouping))


def test_portfolio_of_the_full_bank_is_served_from_portfolio_metrics(full_api: InProcess, full_lake: Path) -> None:
    latest, run = max(serving_runs(full_lake).items())
    table = read_date(full_lake, "portfolio_metrics", run)
    assert table is not None
    for grouping in GROUPINGS:
        rows = [r for r in table.to_pylist() if r["grouping"] == grouping]
        data = full_api.data(portfolio_query(grouping))
        got = {r["key"]: r for r in data["portfolio"]}
        assert set(got) == {r["group_key"] for r in rows}
        for row in rows:
            api_row = got[row["group_key"]]
            assert api_row["label"] == (row["group_label"] or row["group_key"])
            assert api_row["loanCount"] == row["loan_count"]
            assert Decimal(api_row["balance"]) == row["outstanding_balance"]
            assert Decimal(api_row["overdueBalance"]) == row["overdue_balance"]
            assert Decimal(api_row["nplBalance"]) == row["npl_balance"]
            for name in ("overdue_ratio", "npl_ratio"):
                camel = "overdueRatio" if name == "overdue_ratio" else "nplRatio"
                assert api_row[camel] == (None if row[name] is None else pytest.approx(float(row[name]), abs=1e-9))
            for c in api_row["byClass"]:
                assert c["loanCount"] == row[f"{c['riskClass'].lower()}_count"]
                assert Decimal(c["balance"]) == row[f"{c['riskClass'].lower()}_balance"]
    # ... and the table agrees with the snapshot it summarises
    rows = snapshot(full_lake, latest)
    for grouping in GROUPINGS:
        data = full_api.data(portfolio_query(grouping))
        assert_portfolio(data["portfolio"], expected.portfolio(rows, grouping))


LOAN_FIELDS = """loanId branchId productCode officerId dpd bucket riskClass riskGrade riskReasons
  outstandingPrincipal borrower { borrowerId name idNumber phone }"""


def all_pages(api: InProcess, caller: Any, condition: str, size: int = 37, as_of: str = "") -> tuple[list[Any], int]:
    nodes: list[Any] = []
    after: str | None = None
    total = -1
    query = f"""query($after: String) {{ loans(first: {size}, after: $after{as_of}{condition}) {{
        totalCount edges {{ cursor node {{ {LOAN_FIELDS} }} }} pageInfo {{ hasNextPage endCursor }} }} }}"""
    for _ in range(1000):
        page = api.data(query, caller, {"after": after})["loans"]
        assert total in (-1, page["totalCount"])
        total = page["totalCount"]
        nodes.extend(e["node"] for e in page["edges"])
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    return nodes, total


def test_loans_pages_walk_the_filtered_book_in_loan_id_order(api: InProcess, api_lake: Path) -> None:
    rows = snapshot(api_lake, DATES[-1])
    by_id = {r["loan_id"]: r for r in rows}
    bucket = "M1"
    cases = [
        ("", rows),
        (", filter: {minDpd: 1}", [r for r in rows if r["dpd"] >= 1]),
        (", filter: {minDpd: 31, maxDpd: 400}", [r for r in rows if 31 <= r["dpd"] <= 400]),
        (", filter: {riskClass: SPECIAL_MENTION}", [r for r in rows if r["risk_class"] == "SPECIAL_MENTION"]),
        (f', filter: {{bucket: "{bucket}"}}', [r for r in rows if r["bucket"] == bucket]),
        (
            f', filter: {{productCode: "{rows[0]["product_code"]}", branchId: "{rows[0]["tier1_branch_id"]}"}}',
            [
                r
                for r in rows
                if r["product_code"] == rows[0]["product_code"] and expected.in_scope(r, rows[0]["tier1_branch_id"])
            ],
        ),
    ]
    for condition, want in cases:
        nodes, total = all_pages(api, HQ, condition)
        assert total == len(want)
        assert [n["loanId"] for n in nodes] == sorted(r["loan_id"] for r in want)
        for node in nodes:
            row = by_id[node["loanId"]]
            assert node["branchId"] == row["branch_id"]
            assert node["productCode"] == row["product_code"]
            assert node["officerId"] == row["officer_id"]
            assert node["dpd"] == row["dpd"]
            assert node["bucket"] == row["bucket"]
            assert node["riskClass"] == row["risk_class"]
            assert node["riskGrade"] == row["risk_grade"]
            assert node["riskReasons"] == list(row["risk_reasons"])
            assert Decimal(node["outstandingPrincipal"]) == row["outstanding_principal"]
            assert node["borrower"]["borrowerId"] == row["borrower_id"]


def test_loans_as_of_the_earlier_date(api: InProcess, api_lake: Path) -> None:
    rows = snapshot(api_lake, DATES[0])
    nodes, total = all_pages(api, HQ, ", filter: {minDpd: 1}", size=100, as_of=f', asOf: "{DATES[0]}"')
    assert total == sum(1 for r in rows if r["dpd"] >= 1)
    assert [n["loanId"] for n in nodes] == sorted(r["loan_id"] for r in rows if r["dpd"] >= 1)


def test_loan_history_and_class_changes_come_from_each_dates_run(api: InProcess, api_lake: Path) -> None:
    runs = serving_runs(api_lake)
    histories = read_date(api_lake, "classification_history", runs[DATES[-1]])
    assert histories is not None
    changed = [r for r in histories.to_pylist() if r["from_class"] is not None] or histories.to_pylist()
    loan_id = changed[0]["loan_id"]
    data = api.data(
        """query($id: ID!) { loan(loanId: $id) { loanId riskClass
             history { asOfDate runId dpd bucket riskClass riskGrade outstandingPrincipal }
             classificationChanges { asOfDate fromClass toClass direction riskReasons outstandingPrincipal } } }""",
        variables={"id": loan_id},
    )["loan"]
    want_days = []
    for day in sorted(runs):
        snap = read_date(api_lake, "loan_snapshot", runs[day])
        assert snap is not None
        for row in snap.to_pylist():
            if row["loan_id"] == loan_id:
                want_days.append((day.isoformat(), runs[day]["run_id"], row["dpd"], row["bucket"], row["risk_class"]))
    got_days = [(d["asOfDate"], d["runId"], d["dpd"], d["bucket"], d["riskClass"]) for d in data["history"]]
    assert got_days == want_days
    want_changes = []
    for day in sorted(runs):
        table = read_date(api_lake, "classification_history", runs[day])
        for row in table.to_pylist() if table is not None else []:
            if row["loan_id"] == loan_id:
                want_changes.append((day.isoformat(), row["from_class"], row["to_class"], row["direction"]))
    got_changes = [(c["asOfDate"], c["fromClass"], c["toClass"], c["direction"]) for c in data["classificationChanges"]]
    assert got_changes == want_changes


def test_runs_list_the_ledger(api: InProcess, api_lake: Path) -> None:
    from tests.helpers import ledger

    rows = ledger(api_lake)
    final: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["run_id"] not in final or row["status"] != "RUNNING":
            final[row["run_id"]] = row
    data = api.data("{ runs(last: 50) { runId asOfDate status startedAt finishedAt serving } businessDates }")
    got = {r["runId"]: r for r in data["runs"]}
    assert set(got) == set(final)
    served = {r["run_id"] for r in serving_runs(api_lake).values()}
    for run_id, row in final.items():
        assert got[run_id]["status"] == row["status"]
        assert got[run_id]["asOfDate"] == row["as_of_date"].isoformat()
        assert got[run_id]["serving"] == (run_id in served)
    assert data["businessDates"] == sorted(d.isoformat() for d in serving_runs(api_lake))
    assert [r["runId"] for r in api.data("{ runs(last: 1) { runId } }")["runs"]] == [
        max(final.values(), key=lambda r: r["started_at"])["run_id"]
    ]


# ------------------------------------------------------------------------------------------------
# The later stages' tables (full_lake: the batch's or hand-made rows)


def lake_rows(lake: Path, name: str) -> list[dict[str, Any]]:
    _, run = max(serving_runs(lake).items())
    table = read_date(lake, name, run)
    assert table is not None
    return table.to_pylist()


def test_migration_and_roll_rates_equal_their_tables(full_api: InProcess, full_lake: Path) -> None:
    rows = lake_rows(full_lake, "migration_rates")
    for period in ("MONTH", "QUARTER", "YEAR"):
        for grouping in ("HQ", "BRANCH"):
            want = [r for r in rows if r["period_type"] == period and r["grouping"] == grouping]
            got = full_api.data(
                f"""{{ migrationRates(periodType: {period}, groupBy: {grouping}) {{ key fromClass loanCount
                      startBalance denominatorBalance movedDownBalance migrationRate transitions {{ toState loanCount balance }} }} }}"""
            )["migrationRates"]
            assert len(got) == len(want)
            index = {(r["group_key"], r["from_class"]): r for r in want}
            for g in got:
                r = index[(g["key"], g["fromClass"])]
                assert g["loanCount"] == r["loan_count"]
                assert Decimal(g["startBalance"]) == r["start_balance"]
                assert Decimal(g["denominatorBalance"]) == r["denominator_balance"]
                assert Decimal(g["movedDownBalance"]) == r["moved_down_balance"]
                assert g["migrationRate"] == (None if r["migration_rate"] is None else float(r["migration_rate"]))
                for t in g["transitions"]:
                    stem = t["toState"].lower().replace("+", "plus")
                    assert t["loanCount"] == r[f"to_{stem}_count"]
                    assert Decimal(t["balance"]) == r[f"to_{stem}_balance"]
    rolls = lake_rows(full_lake, "roll_rates")
    got = full_api.data(
        "{ rollRates(groupBy: BRANCH) { key fromBucket fromBalance cureRate rollForwardRate transitions { toState balance } } }"
    )["rollRates"]
    want = {(r["group_key"], r["from_bucket"]): r for r in rolls if r["grouping"] == "BRANCH"}
    assert len(got) == len(want)
    for g in got:
        r = want[(g["key"], g["fromBucket"])]
        assert Decimal(g["fromBalance"]) == r["from_balance"]
        assert g["cureRate"] == (None if r["cure_rate"] is None else float(r["cure_rate"]))


def test_vintage_kpi_channel_and_warnings_equal_their_tables(full_api: InProcess, full_lake: Path) -> None:
    vintage = lake_rows(full_lake, "vintage")
    got = full_api.data("{ vintage { productCode disbursementMonth mob disbursedAmount everDpd30Rate } }")["vintage"]
    assert sorted((g["productCode"], g["disbursementMonth"], g["mob"]) for g in got) == sorted(
        (r["product_code"], r["disbursement_month"].isoformat(), r["mob"]) for r in vintage
    )
    assert sum(Decimal(g["disbursedAmount"]) for g in got) == sum(r["disbursed_amount"] for r in vintage)
    breaches = lake_rows(full_lake, "kpi_breaches")
    got = full_api.data("{ kpiBreaches { metric key value target gap baseBalance } }")["kpiBreaches"]
    assert sorted((g["metric"], g["key"], g["value"]) for g in got) == sorted(
        (r["metric"], r["group_key"], float(r["value"])) for r in breaches
    )
    channels = lake_rows(full_lake, "channel_scorecard")
    got = full_api.data("{ channelScorecard { channelId loanCount outstandingBalance score flaggedForExit } }")[
        "channelScorecard"
    ]
    assert sorted((g["channelId"], g["loanCount"], Decimal(g["outstandingBalance"])) for g in got) == sorted(
        (r["channel_id"], r["loan_count"], r["outstanding_balance"]) for r in channels
    )
    warnings = lake_rows(full_lake, "early_warnings")
    page = full_api.data("{ earlyWarnings(first: 500) { totalCount edges { node { loanId warningType dpd } } } }")
    assert page["earlyWarnings"]["totalCount"] == len(warnings)
    assert sorted((e["node"]["loanId"], e["node"]["warningType"]) for e in page["earlyWarnings"]["edges"]) == sorted(
        (r["loan_id"], r["warning_type"]) for r in warnings
    )


def test_tasks_cases_and_agencies_equal_their_tables(full_api: InProcess, full_lake: Path) -> None:
    tasks = lake_rows(full_lake, "inspection_tasks")
    page = full_api.data(
        "{ inspectionTasks(first: 500) { totalCount edges { node { taskId taskType dueDate status daysOverdue } } } }"
    )["inspectionTasks"]
    assert page["totalCount"] == len(tasks)
    got = [(e["node"]["taskId"], e["node"]["dueDate"], e["node"]["status"]) for e in page["edges"]]
    assert got == sorted(
        ((r["task_id"], r["due_date"].isoformat(), r["status"]) for r in tasks), key=lambda t: (t[1], t[0])
    )
    overdue = full_api.data("{ inspectionTasks(filter: {status: OVERDUE}, first: 500) { totalCount } }")
    assert overdue["inspectionTasks"]["totalCount"] == sum(r["status"] == "OVERDUE" for r in tasks)
    cases = lake_rows(full_lake, "collection_cases")
    page = full_api.data(
        "{ collectionCases(first: 500) { totalCount edges { node { loanId mode dpd overdueAmount actions { actionType } } } } }"
    )["collectionCases"]
    assert page["totalCount"] == len(cases)
    index = {r["loan_id"]: r for r in cases}
    for edge in page["edges"]:
        row = index[edge["node"]["loanId"]]
        assert edge["node"]["mode"] == row["mode"]
        assert Decimal(edge["node"]["overdueAmount"]) == row["overdue_amount"]
        assert [a["actionType"] for a in edge["node"]["actions"]] == [a["action_type"] for a in row["actions"]]
    scorecards = lake_rows(full_lake, "agency_scorecard")
    placements = lake_rows(full_lake, "agency_placements")
    agencies = full_api.data(
        """{ agencies { agencyId scorecards { month casesPlaced recoveredAmount feeAmount }
             placements(first: 500) { totalCount edges { node { loanId status amountAtPlacement } } } } }"""
    )["agencies"]
    assert {a["agencyId"] for a in agencies} == {r["agency_id"] for r in scorecards} | {
        r["agency_id"] for r in placements if r["agency_id"] is not None
    }
    for agency in agencies:
        mine = [r for r in scorecards if r["agency_id"] == agency["agencyId"]]
        assert sum(Decimal(s["feeAmount"]) for s in agency["scorecards"]) == sum(r["fee_amount"] for r in mine)
        held = [r for r in placements if r["agency_id"] == agency["agencyId"]]
        assert agency["placements"]["totalCount"] == len(held)


def test_quarantine_of_a_run(full_api: InProcess, full_lake: Path) -> None:
    for r in serving_runs(full_lake).values():
        table = read_date(full_lake, "quarantine", r)
        want = [x for x in (table.to_pylist() if table is not None else []) if x["run_id"] == r["run_id"]]
        got = full_api.data(
            "query($id: ID!) { quarantine(runId: $id, first: 500) { totalCount edges { node { sourceTable reasonCode rowHash } } } }",
            variables={"id": r["run_id"]},
        )["quarantine"]
        assert got["totalCount"] == len(want)
        assert sorted(e["node"]["rowHash"] for e in got["edges"]) == sorted(x["row_hash"] for x in want)


# ------------------------------------------------------------------------------------------------
# Every scalar field of every node type, against the same-named column of its Delta row


def scalar_fields(cls: type) -> list[tuple[str, str]]:
    """(camelCase field, snake_case column) of a strawberry type's scalar and enum fields."""
    from strawberry.types.base import StrawberryList, StrawberryOptional
    from strawberry.types.enum import StrawberryEnumDefinition

    out = []
    for f in cls.__strawberry_definition__.fields:  # type: ignore[attr-defined]
        t = f.type.of_type if isinstance(f.type, StrawberryOptional) else f.type
        inner = t.of_type if isinstance(t, StrawberryList) else t
        scalar = (
            isinstance(inner, StrawberryEnumDefinition)
            or inner in (str, int, float, bool, Decimal)
            or (getattr(inner, "__name__", "") in ("date", "datetime", "ID"))
        )
        if scalar or inner.__class__.__name__ == "NewType" or str(inner) in ("ID", "<class 'strawberry.ID'>"):
            camel = "".join(w.capitalize() if i else w for i, w in enumerate(f.python_name.split("_")))
            out.append((camel, f.python_name))
    return out


def same(api_value: Any, lake_value: Any) -> bool:
    if lake_value is None or api_value is None:
        return api_value is None and lake_value is None
    if isinstance(lake_value, Decimal):
        if isinstance(api_value, float):
            return abs(api_value - float(lake_value)) < 1e-9
        return Decimal(api_value) == lake_value
    if isinstance(lake_value, dt.date):
        return api_value == lake_value.isoformat()
    if isinstance(lake_value, list):
        return list(api_value) == lake_value
    return bool(api_value == lake_value)


def node_types() -> list[Any]:
    from api.collection import CollectionCase
    from api.inspection import InspectionTask, SettledLoan
    from api.loans import Loan
    from api.metrics import EarlyWarning

    return [
        ("loans", Loan, "loan_snapshot", ("loanId",), ("loan_id",)),
        ("inspectionTasks", InspectionTask, "inspection_tasks", ("taskId",), ("task_id",)),
        ("settledLoans", SettledLoan, "settled_loans", ("loanId",), ("loan_id",)),
        ("collectionCases", CollectionCase, "collection_cases", ("loanId",), ("loan_id",)),
        (
            "earlyWarnings",
            EarlyWarning,
            "early_warnings",
            ("loanId", "warningType", "signalId"),
            ("loan_id", "warning_type", "signal_id"),
        ),
    ]


@pytest.mark.parametrize("case", node_types(), ids=lambda c: c[0])
def test_every_scalar_field_of_paged_nodes_equals_its_column(full_api: InProcess, full_lake: Path, case: Any) -> None:
    field, cls, table, api_key, lake_key = case
    fields = scalar_fields(cls)
    rows = {tuple(r[k] for k in lake_key): r for r in lake_rows(full_lake, table)}
    nodes, after = [], None
    names = " ".join(camel for camel, _ in fields)
    query = f"query($a: String) {{ {field}(first: 200, after: $a) {{ edges {{ node {{ {names} }} }} pageInfo {{ hasNextPage endCursor }} }} }}"
    while True:
        page = full_api.data(query, variables={"a": after})[field]
        nodes += [e["node"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert len(nodes) == len(rows)
    compared = 0
    for node in nodes:
        row = rows[tuple(node[k] for k in api_key)]
        for camel, snake in fields:
            if snake in row:
                assert same(node[camel], row[snake]), (field, camel, node[camel], row[snake])
                compared += 1
    assert compared >= len(nodes) * 5


@pytest.mark.parametrize(
    ("query", "field", "cls_name", "table", "key"),
    [
        (
            "migrationRates(periodType: MONTH, groupBy: BRANCH)",
            "migrationRates",
            "MigrationRate",
            "migration_rates",
            ("period_type", "grouping", "group_key", "from_class"),
        ),
        ("rollRates(groupBy: BRANCH)", "rollRates", "RollRate", "roll_rates", ("grouping", "group_key", "from_bucket")),
        ("vintage", "vintage", "VintagePoint", "vintage", ("product_code", "disbursement_month", "mob")),
        ("kpiBreaches", "kpiBreaches", "KpiBreach", "kpi_breaches", ("metric", "grouping", "group_key")),
        ("channelScorecard", "channelScorecard", "ChannelScore", "channel_scorecard", ("channel_id",)),
    ],
)
def test_every_scalar_field_of_metrics_rows_equals_its_column(
    full_api: InProcess, full_lake: Path, query: str, field: str, cls_name: str, table: str, key: tuple[str, ...]
) -> None:
    import api.metrics

    cls = getattr(api.metrics, cls_name)
    fields = scalar_fields(cls)
    names = " ".join(camel for camel, _ in fields)
    got = full_api.data(f"{{ {query} {{ {names} }} }}")[field]
    lake = lake_rows(full_lake, table)
    aliases = {"group_key": "key", "group_label": "label"}
    index = {}
    for row in lake:
        index[tuple(str(row[k]) for k in key)] = row
    api_key = [aliases.get(k, k) for k in key]
    camel_of = {snake: camel for camel, snake in fields}
    assert got
    for node in got:
        values = []
        for k in api_key:
            value = node[camel_of[k]]
            values.append(str(value))
        lookup = tuple(
            str(dt.date.fromisoformat(v)) if k.endswith("month") else v for k, v in zip(key, values, strict=True)
        )
        row = index[lookup]
        for camel, snake in fields:
            column = {"key": "group_key", "label": "group_label"}.get(snake, snake)
            if column in row:
                assert same(node[camel], row[column]), (field, camel, node[camel], row[column])


def test_every_field_of_agency_months_placements_and_transitions(full_api: InProcess, full_lake: Path) -> None:
    from api.collection import AgencyMonth, Placement

    months = " ".join(c for c, _ in scalar_fields(AgencyMonth))
    placed = " ".join(c for c, _ in scalar_fields(Placement))
    agencies = full_api.data(
        f"{{ agencies {{ agencyId scorecards {{ {months} }} placements(first: 500) {{ edges {{ node {{ {placed} }} }} }} }} }}"
    )["agencies"]
    cards = {(r["agency_id"], r["month"].isoformat()): r for r in lake_rows(full_lake, "agency_scorecard")}
    placements = {(r["loan_id"], r["placement_id"]): r for r in lake_rows(full_lake, "agency_placements")}
    seen_cards = seen_placements = 0
    for agency in agencies:
        for card in agency["scorecards"]:
            row = cards[(agency["agencyId"], card["month"])]
            for camel, snake in scalar_fields(AgencyMonth):
                assert same(card[camel], row[snake]), (camel, card[camel], row[snake])
            seen_cards += 1
        for edge in agency["placements"]["edges"]:
            node = edge["node"]
            row = placements[(node["loanId"], node["placementId"])]
            for camel, snake in scalar_fields(Placement):
                assert same(node[camel], row[snake]), (camel, node[camel], row[snake])
            seen_placements += 1
    assert seen_cards == len(cards)
    assert seen_placements == sum(1 for r in placements.values() if r["agency_id"] is not None)
    rolls = {
        (r["group_key"], r["from_bucket"]): r for r in lake_rows(full_lake, "roll_rates") if r["grouping"] == "BRANCH"
    }
    for g in full_api.data(
        "{ rollRates(groupBy: BRANCH) { key fromBucket transitions { toState loanCount balance } } }"
    )["rollRates"]:
        row = rolls[(g["key"], g["fromBucket"])]
        for t in g["transitions"]:
            stem = t["toState"].lower().replace("+", "plus")
            assert t["loanCount"] == row[f"to_{stem}_count"]
            assert Decimal(t["balance"]) == row[f"to_{stem}_balance"]
