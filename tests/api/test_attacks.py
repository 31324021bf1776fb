"""Attacks on the running server over real HTTP: forged and stale tokens, a BRANCH caller reaching
for another branch (arguments, aliases, fragments, nested fields, cursors), depth, alias and token
bombs, oversized pages and bodies, batches. Each is refused with its status, and no response body
carries a row the caller may not see: no loan id outside its scope, no borrower's personal data.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pyarrow.parquet as pq
import pytest

from api.auth import issue_token
from api.settings import ApiSettings, AuthSettings, Limits
from tests.api.conftest import DATES, HQ, HQ_PII, SECRET, branch, running_server, token
from tests.api.lakes import read_date, serving_runs

GRAPHQL_RESPONSE = "application/graphql-response+json"
BRANCH_TABLES = ("loan_snapshot", "inspection_tasks", "collection_cases", "early_warnings", "settled_loans")
PERSONAL = ("name", "id_number", "phone")
LOANS_WITH_PEOPLE = "{ loans(first: 50) { edges { node { loanId borrower { name idNumber phone } } } } }"


# ------------------------------------------------------------------------------------------------
# What must never leak


def latest(lake: Path, name: str) -> list[dict[str, Any]]:
    _, run = max(serving_runs(lake).items())
    table = read_date(lake, name, run)
    return [] if table is None else table.to_pylist()


class Secrets:
    """The lake's loan ids and borrowers' personal data, and which of them lie in one branch's subtree."""

    def __init__(self, lake: Path) -> None:
        self.rows = {name: latest(lake, name) for name in BRANCH_TABLES}
        snapshot = self.rows["loan_snapshot"]
        self.mine, self.other = sorted({r["tier1_branch_id"] for r in snapshot if r["tier1_branch_id"]})[:2]
        landing = lake.parent / "landing" / "borrowers"
        self.people = {r["borrower_id"]: r for f in landing.rglob("*.parquet") for r in pq.read_table(f).to_pylist()}
        theirs = {r["loan_id"] for rows in self.rows.values() for r in rows if self.mine not in r["branch_path"]}
        mine = {r["loan_id"] for rows in self.rows.values() for r in rows if self.mine in r["branch_path"]}
        self.their_loans = theirs - mine
        my_people = {r["borrower_id"] for r in snapshot if self.mine in r["branch_path"]}
        their_people = {r["borrower_id"] for r in snapshot if r["loan_id"] in self.their_loans} - my_people
        self.their_personal = {self.people[b][k] for b in their_people if b in self.people for k in PERSONAL} - {None}
        self.everything = (
            {r["loan_id"] for rows in self.rows.values() for r in rows}
            | {p[k] for p in self.people.values() for k in PERSONAL}
        ) - {None}
        self.their_loan = next(r for r in snapshot if r["loan_id"] in self.their_loans)
        assert self.their_loans and self.their_personal and len(self.everything) > len(self.their_loans)

    def leaked(self, text: str, values: set[str]) -> set[str]:
        """Values found in a response body (raw, or as JSON escapes it)."""
        return {v for v in values if v in text or json.dumps(v)[1:-1] in text}


@pytest.fixture(scope="module")
def lake_secrets(full_lake: Path) -> Secrets:
    return Secrets(full_lake)


def assert_refused(r: httpx.Response, status: int, code: str, secrets: Secrets) -> dict[str, Any]:
    """The status, an error with the code, no data at all, nothing of the lake in the body."""
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body.get("data") is None, body
    assert code in [(e.get("extensions") or {}).get("code") for e in body["errors"]], body
    assert not secrets.leaked(r.text, secrets.everything)
    return body


def post(url: str, query: str, caller: Any = HQ, variables: dict[str, Any] | None = None, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token(caller)}", **kw.pop("headers", {})}
    return httpx.post(url, json={"query": query, "variables": variables}, headers=headers, timeout=60, **kw)


# ------------------------------------------------------------------------------------------------
# Forged, stale and misplaced tokens


def _b64(part: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"sub": "mallory", "role": "HQ", "pii": True, "iss": "postloan", "aud": "postloan-api"}
    claims |= {"iat": now, "exp": now + 3600, **changes}
    return {k: v for k, v in claims.items() if v is not None}


def _unsigned(claims: dict[str, Any], alg: str) -> str:
    return f"{_b64({'alg': alg, 'typ': 'JWT'})}.{_b64(claims)}."


def _edited_payload() -> str:
    """A genuine BRANCH token whose payload was rewritten to HQ with personal data, signature kept."""
    header, _, signature = issue_token(SECRET, AuthSettings(), "BRANCH", "T1-01").split(".")
    return f"{header}.{_b64(_claims(role='HQ', pii=True))}.{signature}"


def _hs512() -> str:
    with warnings.catch_warnings():  # PyJWT warns that the key is short for SHA-512: it is HS256's
        warnings.simplefilter("ignore")
        return jwt.encode(_claims(), SECRET, algorithm="HS512")


NOW = dt.datetime.now(dt.UTC)
BAD_TOKENS = {
    "expired": issue_token(SECRET, AuthSettings(), "HQ", pii=True, now=NOW - dt.timedelta(hours=9)),
    "signed with another secret": issue_token(b"an-attackers-secret-of-enough-length-0123", AuthSettings(), "HQ"),
    "alg none": _unsigned(_claims(), "none"),
    "alg None": _unsigned(_claims(), "None"),
    "alg NONE with a signature": _unsigned(_claims(), "NONE") + "c2ln",
    "HS512 with the right secret": _hs512(),
    "payload edited, signature kept": _edited_payload(),
    "role ADMIN": jwt.encode(_claims(role="ADMIN"), SECRET, algorithm="HS256"),
    "role lower case": jwt.encode(_claims(role="hq"), SECRET, algorithm="HS256"),
    "no role": jwt.encode(_claims(role=None), SECRET, algorithm="HS256"),
    "BRANCH without a branch": jwt.encode(_claims(role="BRANCH"), SECRET, algorithm="HS256"),
    "no expiry": jwt.encode(_claims(exp=None), SECRET, algorithm="HS256"),
    "not valid yet": jwt.encode(_claims(nbf=int(time.time()) + 3600), SECRET, algorithm="HS256"),
    "another audience": jwt.encode(_claims(aud="another-api"), SECRET, algorithm="HS256"),
    "another issuer": jwt.encode(_claims(iss="someone"), SECRET, algorithm="HS256"),
    "pii as text": jwt.encode(_claims(pii="true"), SECRET, algorithm="HS256"),
    "not a JWT": "abc.def.ghi",
}


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize("name", list(BAD_TOKENS))
def test_bad_tokens_are_401_with_no_data(server_url: str, lake_secrets: Secrets, name: str, method: str) -> None:
    bad = BAD_TOKENS[name]
    headers = {"Authorization": f"Bearer {bad}"}
    if method == "POST":
        r = httpx.post(server_url, json={"query": LOANS_WITH_PEOPLE}, headers=headers)
    else:
        r = httpx.get(server_url, params={"query": LOANS_WITH_PEOPLE}, headers=headers)
    assert_refused(r, 401, "UNAUTHENTICATED", lake_secrets)
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert bad not in r.text  # the token is never echoed


def test_a_token_anywhere_but_the_authorization_header_is_ignored(server_url: str, lake_secrets: Secrets) -> None:
    good = token(HQ)
    for kw in (
        {"params": {"query": LOANS_WITH_PEOPLE, "access_token": good}},
        {"params": {"query": LOANS_WITH_PEOPLE}, "cookies": {"token": good}},
        {"params": {"query": LOANS_WITH_PEOPLE}, "headers": {"X-Access-Token": good}},
        {"params": {"query": LOANS_WITH_PEOPLE}, "headers": {"Authorization": good}},  # no scheme
        {"params": {"query": LOANS_WITH_PEOPLE}, "headers": {"Authorization": f"Token {good}"}},
    ):
        assert_refused(httpx.get(server_url, **kw), 401, "UNAUTHENTICATED", lake_secrets)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# A BRANCH caller reaching for another branch


def assert_no_other_branch(r: httpx.Response, secrets: Secrets) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert not secrets.leaked(r.text, secrets.their_loans | secrets.their_personal)
    return body


SWEEP = """query Sweep($b: String) {
  loans(first: 500, filter: {branchId: $b}) { totalCount edges { node { loanId borrower { name idNumber phone } } } }
  portfolio(groupBy: BRANCH, filter: {branchId: $b}) { key loanCount balance }
  inspectionTasks(first: 500, filter: {branchId: $b}) { totalCount edges { node { taskId loanId } } }
  collectionCases(first: 500, filter: {branchId: $b}) { totalCount edges { node { loanId } } }
  earlyWarnings(first: 500, filter: {branchId: $b}) { totalCount edges { node { loanId } } }
  settledLoans(first: 500, branchId: $b) { totalCount edges { node { loanId } } }
}"""


def test_a_branch_filter_on_another_branch_answers_nothing(server_url: str, lake_secrets: Secrets) -> None:
    me = branch(lake_secrets.mine, pii=True)
    data = assert_no_other_branch(post(server_url, SWEEP, me, {"b": lake_secrets.other}), lake_secrets)["data"]
    assert data["portfolio"] == []
    for field in ("loans", "inspectionTasks", "collectionCases", "earlyWarnings", "settledLoans"):
        assert data[field] == {"totalCount": 0, "edges": []}, field
    # the same as literals instead of a variable
    literal = SWEEP.replace("($b: String)", "").replace("$b", json.dumps(lake_secrets.other))
    assert assert_no_other_branch(post(server_url, literal, me), lake_secrets)["data"] == data
    # without the filter the caller gets its own rows (the sweep above is not empty by accident)
    own = assert_no_other_branch(post(server_url, SWEEP, me, {"b": None}), lake_secrets)["data"]
    assert own["loans"]["totalCount"] > 0 and own["portfolio"]
    # and the check would see a leak: headquarters' answer holds the other branch's rows
    assert lake_secrets.leaked(post(server_url, SWEEP, HQ_PII, {"b": None}).text, lake_secrets.their_personal)


def test_aliases_do_not_widen_a_branch_scope(server_url: str, lake_secrets: Secrets) -> None:
    me = branch(lake_secrets.mine, pii=True)
    head = lake_secrets.rows["loan_snapshot"][0]["branch_path"][0]
    page = "totalCount edges { node { loanId branchPath borrower { name idNumber phone } } }"
    query = f"""{{
      mine: loans(first: 500) {{ {page} }}
      theirs: loans(first: 500, filter: {{branchId: "{lake_secrets.other}"}}) {{ {page} }}
      bank: loans(first: 500, filter: {{branchId: "{head}"}}) {{ {page} }}
      one: loan(loanId: "{lake_secrets.their_loan["loan_id"]}") {{ loanId }}
      hq: portfolio(groupBy: HQ) {{ key loanCount }}
      tier1: portfolio(groupBy: TIER1_BRANCH) {{ key loanCount }}
    }}"""
    data = assert_no_other_branch(post(server_url, query, me), lake_secrets)["data"]
    assert data["theirs"] == {"totalCount": 0, "edges": []}
    assert data["bank"] == data["mine"] and data["mine"]["totalCount"] > 0
    assert all(lake_secrets.mine in e["node"]["branchPath"] for e in data["mine"]["edges"])
    assert data["one"] is None
    assert [r["key"] for r in data["tier1"]] == [lake_secrets.mine]
    assert data["hq"][0]["loanCount"] == data["mine"]["totalCount"]  # the HQ row is the caller's subtree


def test_fragments_do_not_widen_a_branch_scope(server_url: str, lake_secrets: Secrets) -> None:
    me = branch(lake_secrets.mine, pii=True)
    query = """
      query($b: String, $id: ID!) { ...Theirs ... on Query { loan(loanId: $id) { ...Person } } }
      fragment Theirs on Query {
        loans(first: 500, filter: {branchId: $b}) { totalCount edges { node { loanId ...Person } } }
        portfolio(groupBy: PRODUCT, filter: {branchId: $b}) { key loanCount }
      }
      fragment Person on Loan { loanId borrower { name idNumber phone } history { dpd } }
    """
    variables = {"b": lake_secrets.other, "id": lake_secrets.their_loan["loan_id"]}
    data = assert_no_other_branch(post(server_url, query, me, variables), lake_secrets)["data"]
    assert data == {"loans": {"totalCount": 0, "edges": []}, "portfolio": [], "loan": None}


def test_nested_fields_of_another_branchs_loan_stay_out_of_reach(server_url: str, lake_secrets: Secrets) -> None:
    query = """query($id: ID!, $asOf: Date) {
      loan(loanId: $id, asOf: $asOf) {
        loanId branchPath borrower { borrowerId name idNumber phone }
        history { asOfDate dpd riskClass outstandingPrincipal }
        classificationChanges { asOfDate fromClass toClass }
      }
    }"""
    loan_id = lake_secrets.their_loan["loan_id"]
    for as_of in (None, DATES[0].isoformat(), DATES[-1].isoformat()):
        variables = {"id": loan_id, "asOf": as_of}
        r = post(server_url, query, branch(lake_secrets.mine, pii=True), variables)
        assert assert_no_other_branch(r, lake_secrets) == {"data": {"loan": None}}
    # the loan exists: headquarters gets it, so the null above is the scope at work
    hq = post(server_url, query, HQ, {"id": loan_id, "asOf": None}).json()
    assert hq["data"]["loan"]["loanId"] == loan_id and hq["data"]["loan"]["history"]


def test_tampered_and_foreign_cursors_are_refused(server_url: str, lake_secrets: Secrets) -> None:
    me = branch(lake_secrets.mine, pii=True)
    page = "query($a: String) { loans(first: 3, after: $a) { edges { node { loanId branchPath } } } }"
    first = post(server_url, "{ loans(first: 1) { edges { cursor node { loanId } } } }", me).json()
    edge = first["data"]["loans"]["edges"][0]
    tasks = post(server_url, "{ inspectionTasks(first: 1) { pageInfo { endCursor } } }", me).json()
    task_cursor = tasks["data"]["inspectionTasks"]["pageInfo"]["endCursor"]
    # the cursor's key rewritten to another branch's loan, the HMAC left as it was
    raw = base64.urlsafe_b64decode(edge["cursor"] + "=" * (-len(edge["cursor"]) % 4))
    forged_raw = raw.replace(edge["node"]["loanId"].encode(), lake_secrets.their_loan["loan_id"].encode())
    assert forged_raw != raw
    forged = base64.urlsafe_b64encode(forged_raw).decode().rstrip("=")
    flipped = edge["cursor"][:-2] + ("xx" if not edge["cursor"].endswith("xx") else "yy")
    for bad in (flipped, forged, task_cursor, "x" * 3000, "", "=="):
        assert_refused(post(server_url, page, me, {"a": bad}), 200, "BAD_USER_INPUT", lake_secrets)
    # a genuine cursor from headquarters only positions the page: the rows stay the caller's
    hq_cursor = post(server_url, "{ loans(first: 250) { pageInfo { endCursor } } }", HQ).json()
    after = hq_cursor["data"]["loans"]["pageInfo"]["endCursor"]
    rows = assert_no_other_branch(post(server_url, page, me, {"a": after}), lake_secrets)["data"]["loans"]["edges"]
    assert all(lake_secrets.mine in e["node"]["branchPath"] for e in rows)


@pytest.mark.parametrize(
    "query",
    [
        "{ vintage { mob everDpd30Rate } }",
        "{ agencies { agencyId placements(first: 500) { edges { node { loanId } } } } }",
        '{ quarantine(runId: "any") { totalCount } }',
    ],
)
def test_bank_wide_fields_are_forbidden_to_a_branch_token(server_url: str, lake_secrets: Secrets, query: str) -> None:
    r = post(server_url, query, branch(lake_secrets.mine, pii=True))
    assert_refused(r, 200, "FORBIDDEN", lake_secrets)


# ------------------------------------------------------------------------------------------------
# Bombs, oversized pages and bodies, batches

TIGHT = Limits(max_depth=3, max_aliases=2, max_tokens=300, max_page_size=10, default_page_size=5, max_body_bytes=2048)


@pytest.fixture(scope="module")
def tight_url(full_lake: Path) -> Iterator[str]:
    with running_server(full_lake, ApiSettings(limits=TIGHT)) as url:
        yield url


def refused_either_way(url: str, query: str, secrets: Secrets, message: str) -> None:
    """A request error: HTTP 400 for application/graphql-response+json, 200 for application/json
    (GraphQL over HTTP), never any data."""
    for accept, status in ((GRAPHQL_RESPONSE, 400), ("application/json", 200)):
        r = post(url, query, HQ, headers={"Accept": accept})
        assert r.status_code == status, r.text
        body = r.json()
        assert "data" not in body and message in body["errors"][0]["message"], body
        assert not secrets.leaked(r.text, secrets.everything)


def test_depth_bombs_are_refused(server_url: str, tight_url: str, lake_secrets: Secrets) -> None:
    deep = "{ loans { edges { node { borrower { name idNumber phone } } } } }"
    refused_either_way(tight_url, deep, lake_secrets, "exceeds maximum operation depth")
    # introspection is exempt from the depth limit, but not its own cycles (types -> fields -> type ...)
    cycle = "{ __schema { types { fields { type { fields { type { fields { type { fields { name } } } } } } } } } }"
    refused_either_way(server_url, cycle, lake_secrets, "Maximum introspection depth exceeded")
    # nesting the parser itself refuses
    nested = '{ __type(name: "Loan") { ' + "ofType { " * 300 + "name" + " }" * 300 + " } }"
    refused_either_way(server_url, nested, lake_secrets, "nested too deeply")


def test_alias_bombs_are_refused(server_url: str, tight_url: str, lake_secrets: Secrets) -> None:
    three = "{ a: loans { totalCount } b: loans { totalCount } c: loans { totalCount } }"
    refused_either_way(tight_url, three, lake_secrets, "aliases")
    page = "edges { node { loanId borrower { name idNumber phone } } }"
    bomb = "{ " + " ".join(f"p{i}: loans(first: 500) {{ {page} }}" for i in range(16)) + " }"  # default limit 15
    refused_either_way(server_url, bomb, lake_secrets, "aliases")


def test_oversized_pages_are_refused(server_url: str, tight_url: str, lake_secrets: Secrets) -> None:
    for url, first in ((server_url, 501), (server_url, 2**31 - 1), (tight_url, 11), (server_url, -1)):
        query = LOANS_WITH_PEOPLE if url == server_url else "{ loans(first: 50) { totalCount } }"
        query = query.replace("first: 50", f"first: {first}")
        body = assert_refused(post(url, query), 200, "BAD_USER_INPUT", lake_secrets)
        assert "first" in body["errors"][0]["message"]
    # beyond a GraphQL Int: a validation error
    r = post(server_url, "{ loans(first: 99999999999) { totalCount } }", headers={"Accept": GRAPHQL_RESPONSE})
    assert r.status_code == 400 and "data" not in r.json()
    # within the limit: served
    assert len(post(tight_url, "{ loans(first: 10) { edges { cursor } } }").json()["data"]["loans"]["edges"]) == 10


def test_long_documents_are_refused(tight_url: str, lake_secrets: Secrets) -> None:
    # over the token limit, under the body limit
    many = "{ " + " ".join(f"loans {{ totalCount }} f{i}: viewer {{ role }}" for i in range(40)) + " }"
    assert len(many) < TIGHT.max_body_bytes
    refused_either_way(tight_url, many, lake_secrets, "tokens")
    # over the body limit: 413, whether the size is declared or streamed (chunked)
    huge = {"query": "{ loans { totalCount } }" + " " * 5000}
    headers = {"Authorization": f"Bearer {token(HQ)}", "Content-Type": "application/json"}
    declared = httpx.post(tight_url, json=huge, headers=headers)
    assert_refused(declared, 413, "PAYLOAD_TOO_LARGE", lake_secrets)

    def chunks() -> Iterator[bytes]:
        text = json.dumps(huge).encode()
        for i in range(0, len(text), 512):
            yield text[i : i + 512]

    streamed = httpx.post(tight_url, content=chunks(), headers=headers)
    assert_refused(streamed, 413, "PAYLOAD_TOO_LARGE", lake_secrets)
    # a GET carries the document in the URL: the same limit, 414
    r = httpx.get(tight_url, params={"query": "{ loans { totalCount } }" + " " * 3000}, headers=headers)
    assert_refused(r, 414, "URI_TOO_LONG", lake_secrets)


def test_batched_and_non_object_bodies_are_refused(server_url: str, lake_secrets: Secrets) -> None:
    one = {"query": LOANS_WITH_PEOPLE}
    headers = {"Authorization": f"Bearer {token(HQ)}", "Content-Type": "application/json"}
    for batch in ([one], [one, one], [one] * 50, []):
        r = httpx.post(server_url, content=json.dumps(batch), headers=headers)
        body = assert_refused(r, 400, "BAD_REQUEST", lake_secrets)
        assert "batched requests" in body["errors"][0]["message"]
    # authentication comes first: an anonymous batch is a 401
    anonymous = httpx.post(server_url, json=[one, one])
    assert_refused(anonymous, 401, "UNAUTHENTICATED", lake_secrets)
    for junk in ('"{ loans { totalCount } }"', "1", "null", "true", "{"):
        assert_refused(httpx.post(server_url, content=junk, headers=headers), 400, "BAD_REQUEST", lake_secrets)
