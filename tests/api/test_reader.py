"""Run pinning and swapping: only SUCCEEDED runs are served, each table at the version its run
recorded; a new run is picked up without a restart and without failing requests in flight."""

from __future__ import annotations

import datetime as dt
import gc
import shutil
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.auth import Caller
from api.lake import SCAN_SLOTS
from api.schema import SERVED_ON_SWAP
from api.server import ServerState, _refresh_logged
from api.settings import ApiSettings, LakeSettings
from schemas.lake import LOAN_SNAPSHOT
from schemas.metrics import PORTFOLIO_METRICS
from tests.api import expected
from tests.api.conftest import DATES, HQ, REPO, SECRET, InProcess, branch, running_server, serving, token
from tests.api.lakes import read_date, serving_runs, succeed_run, write_date

TOTAL = "{ portfolio(groupBy: HQ) { loanCount balance overdueCount } }"


@pytest.fixture
def lake(api_lake: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "lake"
    shutil.copytree(api_lake, copy)
    return copy


def write_book(lake: Path, day: dt.date, rows: list[dict[str, Any]], versions: dict[str, int]) -> dict[str, int]:
    """What a rerun writes for the portfolio queries: the snapshot and the portfolio metrics made
    from it (by the tests' own arithmetic); returns the versions a run recording them would hold."""
    return {
        **versions,
        "loan_snapshot": write_date(lake, LOAN_SNAPSHOT, day, rows),
        "portfolio_metrics": write_date(lake, PORTFOLIO_METRICS, day, expected.metrics_rows(rows)),
    }


def rewrite_latest(lake: Path, change: dict[str, Any]) -> tuple[dt.date, dict[str, int], list[dict[str, Any]]]:
    """Rewrite the latest date as a rerun would (every snapshot row changed); returns the date,
    the versions a run recording it would hold, and the snapshot rows written."""
    day, run = max(serving_runs(lake).items())
    table = read_date(lake, "loan_snapshot", run)
    assert table is not None
    rows = [{**r, **change} for r in table.to_pylist()]
    return day, write_book(lake, day, rows, run["table_versions"]), rows


def overdue_count(client: InProcess, **kw: Any) -> int:
    result = client.run(TOTAL, HQ, **kw)
    assert not result.errors, result.errors
    return int(result.data["portfolio"][0]["overdueCount"])


def test_a_failed_run_is_never_served_even_after_it_wrote(lake: Path) -> None:
    client = InProcess(lake, ApiSettings())
    before = client.data(TOTAL)
    day, versions, rows = rewrite_latest(lake, {"dpd": 999})
    succeed_run(lake, day, versions, status="FAILED")
    client.state.reader.refresh()
    assert client.data(TOTAL) == before  # still the version the serving run recorded
    assert overdue_count(client) != len(rows)
    runs = client.data("{ runs(last: 1) { status serving } }")["runs"]
    assert runs == [{"status": "FAILED", "serving": False}]


def test_a_rerun_swaps_in_and_requests_in_flight_keep_their_run(lake: Path) -> None:
    client = InProcess(lake, ApiSettings())
    before = overdue_count(client)
    in_flight = client.context(HQ)  # pinned before the rerun lands
    day, versions, rows = rewrite_latest(lake, {"dpd": 999})
    run_id = succeed_run(lake, day, versions)
    assert client.state.reader.refresh() is True
    assert overdue_count(client) == len(rows) != before
    assert overdue_count(client, context=in_flight) == before
    served = client.data("{ runs(last: 5) { runId serving } businessDates }")
    assert {"runId": run_id, "serving": True} in served["runs"]
    # the other date is untouched
    earlier = client.data(f'{{ portfolio(groupBy: HQ, asOf: "{DATES[0]}") {{ loanCount }} }}')
    assert (
        earlier["portfolio"][0]["loanCount"] == read_date(lake, "loan_snapshot", serving_runs(lake)[DATES[0]]).num_rows
    )


def test_a_new_business_date_becomes_the_default(lake: Path) -> None:
    client = InProcess(lake, ApiSettings())
    day, run = max(serving_runs(lake).items())
    table = read_date(lake, "loan_snapshot", run)
    assert table is not None
    new_day = day + dt.timedelta(days=30)
    succeed_run(lake, new_day, write_book(lake, new_day, table.to_pylist()[:10], run["table_versions"]))
    client.state.reader.refresh()
    assert client.data("{ businessDates }")["businessDates"][-1] == new_day.isoformat()
    assert client.data(TOTAL)["portfolio"][0]["loanCount"] == 10
    assert (
        client.data(f'{{ portfolio(groupBy: HQ, asOf: "{day}") {{ loanCount }} }}')["portfolio"][0]["loanCount"]
        == table.num_rows
    )


def test_a_swap_keeps_only_the_new_date_when_one_date_is_resident(lake: Path) -> None:
    client = InProcess(lake, ApiSettings(lake=LakeSettings(resident_dates=1)))
    reader = client.state.reader
    day, run = max(serving_runs(lake).items())
    table = read_date(lake, "loan_snapshot", run)
    assert table is not None
    for months in (1, 2):  # two swaps: the eviction once kept the older date on every other one
        new_day = day + dt.timedelta(days=31 * months)
        succeed_run(lake, new_day, write_book(lake, new_day, table.to_pylist()[:10], run["table_versions"]))
        assert reader.refresh()
        assert reader.resident() == [reader.catalog().served[new_day].key]
        assert client.data(TOTAL)["portfolio"][0]["loanCount"] == 10


def test_older_dates_are_loaded_on_demand_and_evicted(lake: Path) -> None:
    client = InProcess(lake, ApiSettings(lake=LakeSettings(resident_dates=1)))
    reader = client.state.reader
    assert len(reader.resident()) == 1
    for _ in range(2):
        older = client.data(f'{{ portfolio(groupBy: HQ, asOf: "{DATES[0]}") {{ loanCount }} }}')
        latest = client.data(TOTAL)
    assert older["portfolio"][0]["loanCount"] == read_date(lake, "loan_snapshot", serving_runs(lake)[DATES[0]]).num_rows
    assert latest["portfolio"][0]["loanCount"] > 0
    assert len(reader.resident()) == 1
    # an old date that must be loaded within an exhausted budget fails cleanly, then succeeds
    client.state.reader._resident.clear()
    client.state.reader.refresh()
    ctx = client.context(HQ, budget_s=0.0)
    result = client.run(f'{{ portfolio(groupBy: HQ, asOf: "{DATES[0]}") {{ loanCount }} }}', context=ctx)
    assert [e.extensions["code"] for e in result.errors] == ["TIME_BUDGET_EXCEEDED"]
    assert client.data(f'{{ portfolio(groupBy: HQ, asOf: "{DATES[0]}") {{ loanCount }} }}')["portfolio"]


LOAN_DETAIL = """query($id: ID!) { loan(loanId: $id) { loanId history { asOfDate dpd }
  classificationChanges { asOfDate toClass } } }"""


def test_per_loan_scans_are_bounded_and_given_up_at_the_deadline(api_lake: Path) -> None:
    """A loan's history on dates not in memory and its class changes are predicate scans of the
    lake. At most SCAN_SLOTS run at once, and a scan whose request ran out of time is never
    started: abandoned scans once piled up in worker threads (the soak, docs/api.md)."""
    client = InProcess(api_lake, ApiSettings(lake=LakeSettings(resident_dates=1)))
    reader = client.state.reader
    try:
        runs = serving_runs(api_lake)
        run = reader.catalog().served[DATES[0]]
        assert run.key not in reader.resident()
        older, latest = (read_date(api_lake, "loan_snapshot", runs[day]) for day in DATES)
        assert older is not None and latest is not None
        dpd = dict(zip(older["loan_id"].to_pylist(), older["dpd"].to_pylist(), strict=True))
        ids = sorted(set(dpd) & set(latest["loan_id"].to_pylist()))[:8]  # on the book on both dates

        with pytest.raises(TimeoutError):
            reader.scan_loan(LOAN_SNAPSHOT, run, ids[0], deadline=time.monotonic() - 1)
        assert reader.scans == 0

        found: dict[str, list[str]] = {}

        def scan(loan_id: str) -> None:
            rows = reader.scan_loan(LOAN_SNAPSHOT, run, loan_id, deadline=time.monotonic() + 600)
            found[loan_id] = [] if rows is None else rows["loan_id"].to_pylist()

        threads = [threading.Thread(target=scan, args=(i,)) for i in ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert found == {i: [i] for i in ids}
        assert reader.scans == len(ids) and 1 <= reader.scans_peak <= SCAN_SLOTS

        # Every slot busy (scans of other requests): a loan's detail gives up when its budget
        # runs out, with the budget's error, and starts no scan.
        for _ in range(SCAN_SLOTS):
            reader._scan_slots.acquire()
        try:
            started = reader.scans
            result = client.run(LOAN_DETAIL, HQ, {"id": ids[0]}, budget_s=0.5)
            assert result.errors and {e.extensions["code"] for e in result.errors} == {"TIME_BUDGET_EXCEEDED"}
            assert reader.scans == started
        finally:
            for _ in range(SCAN_SLOTS):
                reader._scan_slots.release()
        history = client.data(LOAN_DETAIL, HQ, {"id": ids[0]})["loan"]["history"]
        assert {d["asOfDate"]: d["dpd"] for d in history}[DATES[0].isoformat()] == dpd[ids[0]]
    finally:
        reader.close()


def test_a_loan_detail_is_answered_from_memory_on_every_served_date(api_lake: Path) -> None:
    """Each served date keeps what loan details read (the history columns of its snapshot and its
    classification_history, by loan id): loaded with the newest date before it is served, and
    for other dates in the background on the first detail that needs them, without loading the
    whole date. Scans answer only until then, and the answer is the same either way."""
    client = InProcess(api_lake, ApiSettings(lake=LakeSettings(resident_dates=1)))
    reader = client.state.reader
    try:
        runs = serving_runs(api_lake)
        recorded: dict[dt.date, dict[str, str]] = {}
        for day in DATES:
            table = read_date(api_lake, "classification_history", runs[day])
            assert table is not None
            recorded[day] = {r["loan_id"]: r["to_class"] for r in table.to_pylist()}
        snapshots = {day: read_date(api_lake, "loan_snapshot", runs[day]) for day in DATES}
        dpd = {
            day: dict(zip(t["loan_id"].to_pylist(), t["dpd"].to_pylist(), strict=True))
            for day, t in snapshots.items()
            if t is not None
        }
        # the first run records every loan; the second only the loans whose class changed
        changed = sorted(set(recorded[DATES[0]]) & set(recorded[DATES[1]]) & set(dpd[DATES[1]]))[0]
        kept = sorted((set(recorded[DATES[0]]) - set(recorded[DATES[1]])) & set(dpd[DATES[1]]))[0]
        want = {
            loan_id: (
                [(day.isoformat(), recorded[day][loan_id]) for day in DATES if loan_id in recorded[day]],
                [(day.isoformat(), dpd[day][loan_id]) for day in DATES if loan_id in dpd[day]],
            )
            for loan_id in (changed, kept)
        }
        assert len(want[changed][0]) == 2 and len(want[kept][0]) == 1

        def detail(loan_id: str) -> tuple[tuple[list[tuple[str, str]], list[tuple[str, int]]], int]:
            """The loan's recorded changes and its history's dpd, and the scans the answer cost."""
            before = reader.scans
            loan = client.data(LOAN_DETAIL, HQ, {"id": loan_id})["loan"]
            changes = [(c["asOfDate"], c["toClass"]) for c in loan["classificationChanges"]]
            return (changes, [(d["asOfDate"], d["dpd"]) for d in loan["history"]]), reader.scans - before

        older, newest = (reader.catalog().served[day] for day in DATES)
        assert reader.loan_details(newest).done()  # loaded with the date, before it was served
        # the first detail scans the older date (its snapshot row and its change) and starts
        # loading its details
        assert detail(changed) == (want[changed], 2)
        reader.loan_details(older).result(timeout=60)
        assert detail(changed) == (want[changed], 0)
        assert detail(kept) == (want[kept], 0)
        assert reader.resident() == [newest.key]  # no whole date was loaded for it
    finally:
        reader.close()


def test_the_server_picks_up_a_new_run_without_restart_or_failed_requests(lake: Path) -> None:
    settings = ApiSettings(lake=LakeSettings(poll_seconds=0.1))
    with running_server(lake, settings) as url:
        headers = {"Authorization": f"Bearer {token(HQ)}"}
        failures: list[str] = []
        answers: set[int] = set()
        stop = threading.Event()

        def hammer() -> None:
            with httpx.Client(headers=headers, timeout=30) as http:
                while not stop.is_set():
                    r = http.post(url, json={"query": TOTAL})
                    body = r.json()
                    if r.status_code != 200 or "errors" in body:
                        failures.append(f"{r.status_code} {body}")
                    else:
                        answers.add(body["data"]["portfolio"][0]["overdueCount"])

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        day, versions, rows = rewrite_latest(lake, {"dpd": 999})
        succeed_run(lake, day, versions)
        deadline = time.monotonic() + 120
        while len(rows) not in answers and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join()
        assert not failures
        assert len(rows) in answers and len(answers) == 2  # the old run's answer, then the new one


def test_the_api_never_starts_spark() -> None:
    source = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "api").glob("*.py"))
    assert "SparkSession" not in source and "pyspark.sql.functions" not in source


def test_a_failed_load_is_tried_again_only_after_the_retry_interval(lake: Path) -> None:
    # The older date's snapshot files go missing (a real unreadable date, read by delta-rs).
    client = InProcess(lake, ApiSettings(lake=LakeSettings(load_retry_seconds=1.5)))
    reader = client.state.reader
    run = reader.catalog().served[DATES[0]]
    for data_file in (lake / "loan_snapshot" / f"as_of_date={DATES[0]}").glob("*.parquet"):
        data_file.unlink()
    dates, details = reader.loads, reader.detail_loads

    failed_date, failed_details = reader.date_data(run), reader.loan_details(run)
    for future in (failed_date, failed_details):
        with pytest.raises(FileNotFoundError):
            future.result(timeout=30)
    # Within the interval every request gets the same failure: no new read of the date.
    for _ in range(5):
        assert reader.date_data(run) is failed_date
        assert reader.loan_details(run) is failed_details
    assert reader.detail_loads == details + 1
    refused = client.run(f'{{ portfolio(groupBy: HQ, asOf: "{DATES[0]}") {{ loanCount }} }}')
    assert refused.errors and refused.errors[0].extensions["code"] == "DATA_UNAVAILABLE"
    assert reader.date_data(run) is failed_date
    # The latest date is untouched and still answered from memory.
    assert client.data(TOTAL)["portfolio"][0]["loanCount"] > 0

    time.sleep(1.6)
    assert reader.loan_details(run) is not failed_details
    assert reader.detail_loads == details + 2
    assert reader.date_data(run) is not failed_date
    assert reader.loads == dates  # the failed loads never completed


def test_a_new_date_is_served_with_its_work_lists_and_metrics_in_memory(lake: Path) -> None:
    client = InProcess(lake, ApiSettings())
    reader = client.state.reader
    newest = reader.catalog().served[DATES[-1]]
    data = reader.catalog().loaded[newest.key].result()
    # Every table the API reads lazily that the run wrote, quarantine aside, was loaded before
    # the date was published: the first request after a swap waits for none of them.
    wanted = {contract.name for contract, _ in SERVED_ON_SWAP} & set(newest.table_versions)
    assert {"inspection_tasks", "collection_cases", "early_warnings", "portfolio_metrics"} <= wanted
    assert data.loaded_tables() == wanted
    tasks = client.data("{ inspectionTasks(first: 2) { totalCount } }")["inspectionTasks"]["totalCount"]
    assert tasks == read_date(lake, "inspection_tasks", serving_runs(lake)[DATES[-1]]).num_rows
    assert data.loaded_tables() == wanted  # answered from memory, nothing more read
    # An older date loaded on demand reads its tables on first use, as before.
    older = reader.date_data(reader.catalog().served[DATES[0]]).result(timeout=60)
    assert older.loaded_tables() == frozenset()


def test_a_table_that_failed_to_load_is_read_again_after_the_retry_interval(lake: Path, tmp_path: Path) -> None:
    # The newest date's work list goes missing while the server loads the date, then comes back.
    folder = lake / "inspection_tasks" / f"as_of_date={DATES[-1]}"
    aside = tmp_path / "aside"
    shutil.move(folder, aside)
    client = InProcess(lake, ApiSettings(lake=LakeSettings(load_retry_seconds=1.5)))
    data = client.state.reader.catalog().loaded[client.state.reader.catalog().served[DATES[-1]].key].result()
    assert "inspection_tasks" not in data.loaded_tables()
    query = "{ inspectionTasks(first: 1) { totalCount } }"
    refused = client.run(query)
    assert refused.errors and refused.errors[0].extensions["code"] == "DATA_UNAVAILABLE"
    shutil.move(aside, folder)
    refused = client.run(query)  # within the interval: the same failure, no new read
    assert refused.errors and refused.errors[0].extensions["code"] == "DATA_UNAVAILABLE"
    time.sleep(1.6)
    assert client.data(query)["inspectionTasks"]["totalCount"] > 0
    assert "inspection_tasks" in data.loaded_tables()


# Every family of answers a date serves from memory, the newest date's loan book first.
ANSWERED_FROM_MEMORY = (
    "{ portfolio(groupBy: BRANCH) { key loanCount balance overdueBalance nplBalance byClass { riskClass balance } } }",
    "{ loans(first: 30) { totalCount edges { cursor node { loanId dpd bucket riskClass riskReasons"
    " outstandingPrincipal borrower { name idNumber masked } } } } }",
    "{ inspectionTasks(first: 20) { totalCount edges { node { taskId taskType loanId dueDate status } } } }",
    "{ collectionCases(first: 20) { totalCount edges { node { loanId dpd stage mode agencyId } } } }",
    "{ earlyWarnings(first: 20) { totalCount edges { node { loanId warningType severity } } } }",
    "{ channelScorecard { channelId loanCount nplRatio score rating } }",
    "{ rollRates(groupBy: HQ) { key fromBucket fromBalance cureRate rollForwardRate } }",
)


def test_the_newest_date_built_in_a_child_process_answers_as_one_built_here(lake: Path) -> None:
    child = InProcess(lake, ApiSettings())  # lake.load_in_child is the default
    here = InProcess(lake, ApiSettings(lake=LakeSettings(load_in_child=False)))
    assert (child.state.reader.child_builds, here.state.reader.child_builds) == (1, 0)
    reader = child.state.reader
    newest = reader.catalog().served[DATES[-1]]
    data = reader.catalog().loaded[newest.key].result()
    # The work lists, metrics and loan details came with it: nothing is read on first use.
    wanted = {contract.name for contract, _ in SERVED_ON_SWAP} & set(newest.table_versions)
    assert data.loaded_tables() == wanted
    assert reader.loan_details(newest).done() and reader.detail_loads == 1
    product = child.data("{ portfolio(groupBy: PRODUCT) { key } }")["portfolio"][0]["key"]
    filtered = f'{{ portfolio(groupBy: BRANCH, filter: {{ productCode: "{product}" }}) {{ key loanCount balance }} }}'
    for query in (*ANSWERED_FROM_MEMORY, filtered):
        assert child.data(query) == here.data(query), query
    assert child.data(filtered)["portfolio"]  # the product has loans: the filter compared something
    loan_id = child.data("{ loans(first: 1) { edges { node { loanId } } } }")["loans"]["edges"][0]["node"]["loanId"]
    detail = (
        "query($id: ID!) { loan(loanId: $id) { loanId dpd riskClass borrower { name masked }"
        " history { asOfDate dpd riskClass outstandingPrincipal } classificationChanges { asOfDate toClass } } }"
    )
    answers = [c.data(detail, HQ, {"id": loan_id})["loan"] for c in (child, here)]
    assert answers[0] == answers[1] and len(answers[0]["history"]) == len(DATES)
    assert data.loaded_tables() == wanted


def test_a_date_whose_child_build_fails_is_not_served_and_is_built_again(lake: Path, tmp_path: Path) -> None:
    # The newest date's snapshot is unreadable while the child builds it: nothing of it is
    # published; once the files are back, the next poll builds and serves it.
    folder = lake / "loan_snapshot" / f"as_of_date={DATES[-1]}"
    aside = tmp_path / "aside"
    shutil.move(folder, aside)
    reader = ServerState(lake, ApiSettings(), SECRET).reader
    with pytest.raises(FileNotFoundError):  # the child's own exception, raised here
        reader.refresh()
    assert reader.catalog().served == {} and reader.child_builds == 0
    shutil.move(aside, folder)
    assert reader.refresh() and reader.catalog().latest_date == DATES[-1]
    newest = reader.catalog().served[DATES[-1]]
    assert reader.child_builds == 1
    assert (
        reader.catalog().loaded[newest.key].result().loans.n
        == read_date(lake, "loan_snapshot", serving_runs(lake)[DATES[-1]]).num_rows
    )


def test_answers_asked_before_a_swap_are_made_ahead_on_the_new_run_for_each_caller(lake: Path) -> None:
    """Before a new run is published, the requests last answered are answered again on it and
    cached: the first requests after the swap find the new run's answers ready, each made for
    its own caller (a branch still sees only its subtree)."""
    tier1 = InProcess(lake, ApiSettings()).data("{ portfolio(groupBy: TIER1_BRANCH) { key } }")["portfolio"][0]["key"]
    callers = (HQ, branch(tier1))
    queries = (TOTAL, "{ loans(first: 5) { totalCount edges { node { loanId dpd } } } }")
    with serving(lake, ApiSettings(lake=LakeSettings(poll_seconds=0.1))) as (url, state):

        def ask(caller: Caller, query: str) -> Any:
            body = httpx.post(url, json={"query": query}, headers={"Authorization": f"Bearer {token(caller)}"}).json()
            assert "errors" not in body, body
            return body["data"]

        for caller in callers:
            for query in queries:
                ask(caller, query)
        before = state.reader.catalog()
        day, versions, rows = rewrite_latest(lake, {"dpd": 999})
        succeed_run(lake, day, versions)
        deadline = time.monotonic() + 120
        while state.reader.catalog().served[day] == before.served[day] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert state.reader.catalog().served[day] != before.served[day]
        assert state.cache.warmed >= len(callers) * len(queries)
        hits = state.cache.hits
        after = {(c.subject, q): ask(c, q) for c in callers for q in queries}
        assert state.cache.hits == hits + len(after)  # every answer was ready when asked
    # The new run's answers (every loan rewritten 999 days past due) ...
    assert after[(HQ.subject, TOTAL)]["portfolio"][0]["overdueCount"] == len(rows)
    # ... and each caller's own: as an uncached server answers them now.
    fresh = InProcess(lake, ApiSettings(response_cache_mb=0))
    for caller in callers:
        for query in queries:
            assert after[(caller.subject, query)] == fresh.data(query, caller), (caller.subject, query)
    assert after[(callers[1].subject, TOTAL)] != after[(HQ.subject, TOTAL)]


def test_a_ledger_row_that_serves_no_new_run_leaves_the_answers_about_the_data_cached(lake: Path) -> None:
    """A run that starts and fails changes the ledger (a new catalog) but not what is served: the
    cached answers about the data stay valid and are not made again; the list of runs is made
    again on the new ledger, with the failed run in it."""
    runs_query = "{ runs(last: 3) { runId status } }"
    with serving(lake, ApiSettings(lake=LakeSettings(poll_seconds=0.1))) as (url, state):

        def ask(query: str) -> Any:
            body = httpx.post(url, json={"query": query}, headers={"Authorization": f"Bearer {token(HQ)}"}).json()
            assert "errors" not in body, body
            return body["data"]

        total = ask(TOTAL)
        ask(runs_query)
        before = state.reader.catalog()
        failed = succeed_run(lake, DATES[-1], {}, status="FAILED")
        deadline = time.monotonic() + 60
        while (
            state.reader.catalog().run_by_id(failed) is None
            or state.reader.catalog().run_by_id(failed).status != "FAILED"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.3)  # the poll that published it has finished
        after = state.reader.catalog()
        assert after.served == before.served
        # The portfolio's answer was made once, before the new rows; only the list of runs again.
        made = [(key[0][0], key[2]) for key in state.cache.recent(after, 100)]
        assert sorted(made) == [("ledger", runs_query), ("served", TOTAL)]
        assert 1 <= state.cache.warmed <= 2  # once per new ledger version (RUNNING, FAILED)
        hits = state.cache.hits
        assert ask(TOTAL) == total
        runs = ask(runs_query)["runs"]
        assert state.cache.hits == hits + 2
    assert runs[0] == {"runId": failed, "status": "FAILED"}
    assert runs == InProcess(lake, ApiSettings(response_cache_mb=0)).data(runs_query)["runs"]


def test_what_is_alive_when_the_server_starts_is_left_out_of_the_collectors_passes(lake: Path) -> None:
    """The modules, the schema and the first date are frozen for the collector before the first
    request, so the full collections a request may trigger walk only what came after."""
    gc.unfreeze()
    try:
        with serving(lake, ApiSettings()) as (_, state):
            assert gc.get_freeze_count() > 0
            assert all(o is not state for o in gc.get_objects())  # frozen objects are not listed
    finally:
        gc.unfreeze()


def test_a_replaced_date_is_released_within_a_poll_of_the_swap(lake: Path) -> None:
    """Requests leave reference cycles holding their catalog; the poll after a swap collects
    them, so the replaced run's data does not stay in memory until the collector gets to it, and
    it is freed there, by the poller, never by a request's collection."""
    state = ServerState(lake, ApiSettings(), SECRET)
    _refresh_logged(state)
    client = InProcess.__new__(InProcess)
    client.state = state
    before = state.reader.catalog()
    replaced = weakref.ref(before.loaded[before.served[DATES[-1]].key].result())
    assert client.data(TOTAL)["portfolio"][0]["loanCount"] > 0  # a request on the old catalog
    del before
    gc.disable()  # only the poll's own pass may free it
    try:
        day, versions, _ = rewrite_latest(lake, {"dpd": 7})
        succeed_run(lake, day, versions)
        _refresh_logged(state)
        assert state.retiring is not None and state.reader.catalog().served[day].table_versions == versions
        gc.collect()  # a collection a request triggers frees the request's cycle, not the date:
        assert replaced() is not None  # unmapping it would hold that request (and the event loop)
        _refresh_logged(state)  # the next poll, in the poller's thread
        assert replaced() is None
    finally:
        gc.enable()
