"""The audit log (one JSON line per GraphQL request on `postloan.api.audit`) and the absence of
personal data from every log the API writes. Requests go through the whole ASGI app (httpx's
ASGITransport), so each line is written before the call returns."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import pyarrow.parquet as pq
import pytest

from api.audit_log import AUDIT_LOGGER, REDACTED, Redactor, describe
from api.server import PostloanGraphQL, ServerState, _refresh_logged, background_log, create_app
from api.settings import PERSONAL_KEYS, ApiSettings, AuditSettings
from tests.api.conftest import HQ, HQ_PII, SECRET, branch, token
from tests.api.lakes import read_date, serving_runs

PATH = "/graphql"
PERSONAL = ("name", "id_number", "phone")
ROOT_FIELDS = frozenset({"viewer", "loans", "loan", "portfolio", "__schema", "__typename"})


class Client:
    """Requests through the app in process; the lake is loaded first, as the lifespan does."""

    def __init__(self, lake: Path, settings: ApiSettings | None = None) -> None:
        self.app = create_app(lake, settings or ApiSettings(), SECRET, poll=False)
        self.state: ServerState = self.app.state.postloan
        _refresh_logged(self.state)

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                return await client.request(method, url, **kw)

        return anyio.run(send)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("POST", url, **kw)

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)


@contextmanager
def serving(lake: Path, settings: ApiSettings | None = None) -> Iterator[Client]:
    client = Client(lake, settings)
    try:
        yield client
    finally:
        client.state.reader.close()


@pytest.fixture(scope="module")
def client(full_lake: Path) -> Iterator[Client]:
    with serving(full_lake) as c:
        yield c


@pytest.fixture
def audit(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    return caplog


def lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The audit lines written so far, parsed; each is also the record's `audit` attribute."""
    out = []
    for record in caplog.records:
        if record.name == AUDIT_LOGGER and record.levelno == logging.INFO:
            line = json.loads(record.getMessage())
            assert line == record.audit  # type: ignore[attr-defined]
            out.append(line)
    return out


def ask(client: Client, query: str, caller: Any = HQ, variables: Any = None, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {token(caller)}", **kw.pop("headers", {})}
    return client.post(PATH, json={"query": query, "variables": variables, **kw}, headers=headers)


def my_branch(lake: Path) -> str:
    _, run = max(serving_runs(lake).items())
    rows = read_date(lake, "loan_snapshot", run).to_pylist()  # type: ignore[union-attr]
    return sorted({r["tier1_branch_id"] for r in rows if r["tier1_branch_id"]})[0]


# ------------------------------------------------------------------------------------------------
# The line


def test_a_request_is_audited_with_caller_operation_variables_duration_and_outcome(
    client: Client, audit: pytest.LogCaptureFixture, full_lake: Path
) -> None:
    mine = my_branch(full_lake)
    query = "query Page($n: Int, $f: LoanFilter) { loans(first: $n, filter: $f) { totalCount } viewer { role } }"
    variables = {"n": 3, "f": {"branchId": mine, "minDpd": 0, "riskClass": "NORMAL"}}
    before = dt.datetime.now(dt.UTC)
    assert ask(client, query, branch(mine), variables).status_code == 200
    [line] = lines(audit)
    ts = dt.datetime.fromisoformat(line.pop("ts").replace("Z", "+00:00"))
    assert before - dt.timedelta(seconds=1) <= ts <= dt.datetime.now(dt.UTC)
    duration = line.pop("durationMs")
    assert isinstance(duration, float | int) and duration > 0
    assert line == {
        "event": "graphql.request",
        "subject": f"branch:{mine}",
        "role": "BRANCH",
        "branch": mine,
        "pii": False,
        "method": "POST",
        "operation": "Page",
        "operationType": "query",
        "fields": ["loans", "viewer"],
        "queryHash": hashlib.sha256(query.encode()).hexdigest()[:16],
        "variables": variables,
        "status": 200,
        "outcome": "ok",
        "errors": [],
        "cached": False,
    }
    # the same request again is answered from the response cache, and audited as such
    ask(client, query, branch(mine), variables)
    assert lines(audit)[-1]["cached"] is True and len(lines(audit)) == 2


def test_an_anonymous_operation_is_named_by_its_root_fields(client: Client, audit: pytest.LogCaptureFixture) -> None:
    query = "{ viewer { role } a: loans { totalCount } ...F } fragment F on Query { portfolio(groupBy: HQ) { key } }"
    assert client.get(PATH, params={"query": query}, headers={"Authorization": f"Bearer {token(HQ_PII)}"}).is_success
    [line] = lines(audit)
    assert (line["operation"], line["fields"], line["method"]) == (None, ["viewer", "loans", "portfolio"], "GET")
    assert (line["subject"], line["role"], line["branch"], line["pii"]) == ("hq-pii", "HQ", None, True)


def test_personal_undeclared_and_free_text_variables_are_starred(
    client: Client, audit: pytest.LogCaptureFixture
) -> None:
    query = (
        "query Q($name: ID!, $id: ID!, $n: Int, $asOf: Date) { a: loan(loanId: $name) { loanId } "
        "loan(loanId: $id) { loanId } loans(first: $n, asOf: $asOf) { totalCount } }"
    )
    variables = {
        "name": "LN0000000001",  # a personal key: starred whatever the value
        "id": "110101199001011234",  # not code-like text
        "n": 2,
        "asOf": None,
        "idNumber": "LN0000000002",  # not declared
        "extra": {"phone": "13800000000"},  # not declared
    }
    ask(client, query, HQ, variables)
    assert lines(audit)[-1]["variables"] == {
        "name": REDACTED,
        "id": REDACTED,
        "n": 2,
        "asOf": None,
        "idNumber": REDACTED,
        "extra": REDACTED,
    }
    # a request that was not executed keeps no value at all
    ask(client, "query Q($n: Int) { loans(first: $n) { totalCount } }", HQ, {"n": "张三"})
    line = lines(audit)[-1]
    assert line["variables"] == {"n": REDACTED}
    assert line["errors"] == ["GRAPHQL_VALIDATION_FAILED"] and line["outcome"] == "error"


@pytest.mark.parametrize(
    ("case", "status", "errors", "caller"),
    [
        ("no token", 401, ["UNAUTHENTICATED"], None),
        ("bad token", 401, ["UNAUTHENTICATED"], None),
        ("body too large", 413, ["PAYLOAD_TOO_LARGE"], None),
        ("batch", 400, ["BAD_REQUEST"], "hq"),
        ("not an object", 400, ["BAD_REQUEST"], "hq"),
        ("page too large", 200, ["BAD_USER_INPUT"], "hq"),
        ("branch asks for a bank-wide field", 200, ["FORBIDDEN"], "branch:T1-01"),
        ("syntax error", 200, ["GRAPHQL_PARSE_FAILED"], "hq"),
        ("unknown field", 200, ["GRAPHQL_VALIDATION_FAILED"], "hq"),
        ("unknown date", 200, ["DATA_UNAVAILABLE"], "hq"),
    ],
)
def test_refused_and_failed_requests_are_audited_with_their_codes(
    client: Client,
    audit: pytest.LogCaptureFixture,
    case: str,
    status: int,
    errors: list[str],
    caller: str | None,
) -> None:
    auth = {"Authorization": f"Bearer {token(HQ)}"}
    json_body = {"Content-Type": "application/json"}
    send = {
        "no token": lambda: client.post(PATH, json={"query": "{ loans { totalCount } }"}),
        "bad token": lambda: client.post(
            PATH, json={"query": "{ viewer { role } }"}, headers={"Authorization": "Bearer x"}
        ),
        "body too large": lambda: client.post(PATH, content="x" * 70_000, headers={**auth, **json_body}),
        "batch": lambda: client.post(PATH, json=[{"query": "{ viewer { role } }"}], headers=auth),
        "not an object": lambda: client.post(PATH, content="1", headers={**auth, **json_body}),
        "page too large": lambda: ask(client, "{ loans(first: 100000) { totalCount } }"),
        "branch asks for a bank-wide field": lambda: ask(client, "{ vintage { mob } }", branch("T1-01")),
        "syntax error": lambda: ask(client, "{ loans { "),
        "unknown field": lambda: ask(client, "{ nope }"),
        "unknown date": lambda: ask(client, '{ loans(asOf: "1999-01-01") { totalCount } }'),
    }
    assert send[case]().status_code == status
    [line] = lines(audit)
    assert (line["status"], line["errors"], line["outcome"], line["subject"]) == (status, errors, "error", caller)


def test_the_audit_log_can_be_turned_off(full_lake: Path, audit: pytest.LogCaptureFixture) -> None:
    settings = replace(ApiSettings(), audit=AuditSettings(enabled=False))
    with serving(full_lake, settings) as client:
        r = client.post(PATH, json={"query": "{ viewer { role } }"}, headers={"Authorization": f"Bearer {token(HQ)}"})
        assert r.json() == {"data": {"viewer": {"role": "HQ"}}}
        assert client.post(PATH, json={"query": "{ viewer { role } }"}).status_code == 401
    assert lines(audit) == []


# ------------------------------------------------------------------------------------------------
# Personal data never reaches a log


def test_no_personal_data_reaches_any_log(
    full_lake: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    landing = full_lake.parent / "landing" / "borrowers"
    people = {r["borrower_id"]: r for f in landing.rglob("*.parquet") for r in pq.read_table(f).to_pylist()}
    values = {p[k] for p in people.values() for k in PERSONAL} - {None}
    _, run = max(serving_runs(full_lake).items())
    loans = read_date(full_lake, "loan_snapshot", run).to_pylist()  # type: ignore[union-attr]
    loan = next(r for r in loans if all(people.get(r["borrower_id"], {}).get(k) for k in PERSONAL))
    person = people[loan["borrower_id"]]
    mine = loan["tier1_branch_id"]
    borrowers = "edges { node { loanId borrower { borrowerId name idNumber phone } } }"

    import api.schema as schema_module

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"cannot group {person['name']} {person['id_number']} {person['phone']}")

    answers: list[str] = []
    with serving(full_lake) as client:  # the lake's load is logged too
        auth = {"Authorization": f"Bearer {token(HQ_PII)}"}
        sends = [
            # personal data fetched, by HQ and by a branch, POST and GET
            lambda: ask(client, f"{{ loans(first: 500) {{ {borrowers} }} }}", HQ_PII),
            lambda: ask(client, f"query B {{ loans(first: 500) {{ {borrowers} }} }}", branch(mine, pii=True)),
            lambda: client.get(
                PATH,
                params={
                    "query": "query($id: ID!) { loan(loanId: $id) { borrower { name idNumber phone } history { dpd } } }",
                    "variables": json.dumps({"id": loan["loan_id"]}),
                },
                headers=auth,
            ),
            # personal data sent by the client: in variables, declared or not, under any key ...
            lambda: ask(
                client,
                "query($name: ID!, $id: ID!) { a: loan(loanId: $name) { loanId } loan(loanId: $id) { loanId } }",
                HQ_PII,
                {"name": person["name"], "id": person["id_number"], "phone": person["phone"]},
            ),
            # ... in the document, in a variable the schema refuses (its error quotes the value) ...
            lambda: ask(client, f'{{ loan(loanId: "{person["id_number"]}") {{ loanId }} }}', HQ_PII),
            lambda: ask(client, "query($n: Int) { loans(first: $n) { totalCount } }", HQ_PII, {"n": person["name"]}),
            # ... as a token, as an operation name that does not exist, in a batch
            lambda: client.post(
                PATH, json={"query": "{ viewer { role } }"}, headers={"Authorization": f"Bearer {person['phone']}"}
            ),
            lambda: ask(client, "{ viewer { role } }", HQ_PII, operationName=person["name"]),
            lambda: client.post(
                PATH, json=[{"query": "{ viewer { role } }", "variables": {"x": person["name"]}}], headers=auth
            ),
        ]
        answers.extend(send().text for send in sends)
        # unexpected errors whose messages carry personal data: in a resolver, in the view
        monkeypatch.setattr(schema_module, "portfolio_rows", broken)
        answers.append(ask(client, "{ portfolio(groupBy: HQ) { key } }", HQ_PII).text)
        monkeypatch.setattr(PostloanGraphQL, "parse_json", broken)
        failed = ask(client, "{ viewer { role } }", HQ_PII)
        assert failed.status_code == 500 and failed.json()["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
        monkeypatch.undo()

    # the personal data was really served and echoed: the check below is not empty by accident
    served = "\n".join(answers)
    assert {person["name"], person["id_number"], person["phone"]} <= {v for v in values if v in served}
    records = [r for r in caplog.records if r.name.startswith(("postloan", "strawberry", "uvicorn", "starlette"))]
    assert sum(r.name == AUDIT_LOGGER for r in records) == len(sends) + 2
    assert any(r.name == "postloan.api.lake" and "serving" in r.getMessage() for r in records)
    assert sum(r.name == "postloan.api" and r.levelno == logging.ERROR for r in records) == 2  # the two failures
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    text = "\n".join(f"{formatter.format(r)}\n{vars(r)!r}" for r in records)
    leaked = {v for v in values if v in text or json.dumps(v)[1:-1] in text}
    assert not leaked, sorted(leaked)[:5]


# ------------------------------------------------------------------------------------------------
# Units


def test_redaction_stars_personal_keys_at_any_depth_in_any_spelling() -> None:
    redact = Redactor(PERSONAL_KEYS)
    value = {
        "filter": {"branchId": "T1-01", "borrowerName": "LN1", "ID_NUMBER": "X1", "id-no": "X2", "Mobile": "X3"},
        "list": [{"phone": "X4"}, {"code": "MORTGAGE"}, 5, True, None, 1.5],
        "day": "2026-10-31",
        "free": "张三",
        "digits": "13800000000",
        "long": "A" * 65,
        "emailAddress": "a@b",
        "deep": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}},
    }
    assert redact(value) == {
        "filter": {
            "branchId": "T1-01",
            "borrowerName": REDACTED,
            "ID_NUMBER": REDACTED,
            "id-no": REDACTED,
            "Mobile": REDACTED,
        },
        "list": [{"phone": REDACTED}, {"code": "MORTGAGE"}, 5, True, None, 1.5],
        "day": "2026-10-31",
        "free": REDACTED,
        "digits": REDACTED,
        "long": REDACTED,
        "emailAddress": REDACTED,
        "deep": {"a": {"b": {"c": {"d": {"e": "..."}}}}},
    }
    assert redact.variables({"a": 1, "b": 2}, frozenset({"a"}), executed=True) == {"a": 1, "b": REDACTED}
    assert redact.variables({"a": 1}, frozenset({"a"}), executed=False) == {"a": REDACTED}
    assert redact.variables({"a": 1}, None, executed=True) == {"a": REDACTED}
    assert redact.variables(["x"], frozenset(), executed=True) == REDACTED
    assert redact.variables(None, None, executed=True) is None


def test_operations_are_described_without_their_text() -> None:
    doc = "query A { viewer { role } } query B($x: Int) { loans(first: $x) { totalCount } nope }"
    b = describe(doc, "B", 2000, ROOT_FIELDS)
    # `nope` is the client's text, not a field of the schema: not listed
    assert (b.name, b.kind, b.fields, b.variables) == ("B", "query", ("loans",), frozenset({"x"}))
    assert describe(doc, None, 2000, ROOT_FIELDS).fields == ()  # ambiguous without a name
    assert describe(doc, "C", 2000, ROOT_FIELDS).variables == frozenset()
    inline = describe("{ ... on Query { loan(loanId: 1) { loanId } } __typename }", None, 2000, ROOT_FIELDS)
    assert (inline.name, inline.fields) == (None, ("loan", "__typename"))
    broken = describe("{ loans {", "X", 2000, ROOT_FIELDS)
    assert (broken.name, broken.fields, broken.variables) == (REDACTED, (), None)
    assert describe(doc, "C", 2000, ROOT_FIELDS).name == REDACTED  # not the document's: the client's text
    assert describe("{ " + "viewer " * 50 + "}", None, 20, ROOT_FIELDS).variables is None  # over the token limit
    assert describe(None, None, 2000, ROOT_FIELDS) == describe("", None, 2000, ROOT_FIELDS)


class StalledStream(io.StringIO):
    """A log stream that cannot be written until `flowing` is set (a disk holding writers back)."""

    def __init__(self) -> None:
        super().__init__()
        self.flowing = threading.Event()

    def write(self, text: str) -> int:
        self.flowing.wait()
        return super().write(text)


def test_log_lines_are_written_behind_the_requests_so_a_stalled_stream_holds_none() -> None:
    stream = StalledStream()
    handler, writer = background_log(stream)
    server_log, audit = logging.getLogger("postloan.api.test_background"), logging.getLogger(AUDIT_LOGGER)
    server_log.propagate = False
    audit_level = audit.level
    for logger in (server_log, audit):
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
    try:
        # Written in place, the first call would wait on the stream for as long as it is stalled.
        calls = threading.Thread(
            target=lambda: (server_log.info("serving %d business dates", 3), audit.info('{"event":"graphql.request"}'))
        )
        calls.start()
        calls.join(timeout=10)
        assert not calls.is_alive()
        assert stream.getvalue() == ""
        stream.flowing.set()
        writer.stop()  # writes what is queued, in order
        server_line, audit_line = stream.getvalue().splitlines()
        assert server_line.endswith(" INFO postloan.api.test_background: serving 3 business dates")
        assert audit_line == '{"event":"graphql.request"}'  # JSON on its own, for log shippers
    finally:
        stream.flowing.set()
        for logger in (server_log, audit):
            logger.removeHandler(handler)
        audit.setLevel(audit_level)
