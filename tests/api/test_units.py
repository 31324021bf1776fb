"""Small units: settings, tokens, cursors, content negotiation, money."""

from __future__ import annotations

import base64
import datetime as dt
from decimal import Decimal
from pathlib import Path

import jwt
import pyarrow as pa
import pytest

from api.auth import AuthError, SecretError, caller_from_header, issue_token, secret_from_env
from api.cursor import CursorCodec, CursorError
from api.frames import cents, money
from api.server import GRAPHQL_RESPONSE, JSON, ServerState, _describe_failure, negotiate
from api.settings import ApiSettings, AuthSettings, load_api_settings
from jobs.config import ConfigError

REPO = Path(__file__).resolve().parents[2]
SECRET = b"k" * 40


def test_committed_api_settings_parse() -> None:
    settings = load_api_settings(REPO / "conf")
    assert settings.graphiql is False
    assert settings.limits.default_page_size <= settings.limits.max_page_size
    assert load_api_settings(REPO / "no-such-dir") == ApiSettings()
    assert settings.audit.enabled and "id_number" in settings.audit.personal_keys


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("port: 0\n", r"api.yaml: port: must be 1..65535"),
        ("port: eighty\n", r"api.yaml: port: expected a whole number"),
        ("colour: red\n", r"api.yaml: colour: unknown key"),
        ("limits:\n  max_page_size: 10\n  default_page_size: 50\n", r"api.yaml: limits.default_page_size: must be"),
        ("limits:\n  max_depth: -2\n", r"api.yaml: limits.max_depth: must not be negative"),
        ("limits:\n  time_budget_ms: 0\n", r"api.yaml: limits.time_budget_ms: must be at least 1"),
        ("lake:\n  resident_dates: 0\n", r"api.yaml: lake.resident_dates: must be at least 1"),
        ("lake:\n  loader_niceness: 20\n", r"api.yaml: lake.loader_niceness: must be 0..19"),
        ("lake:\n  loader_niceness: -1\n", r"api.yaml: lake.loader_niceness: must not be negative"),
        ("lake:\n  load_timeout_seconds: 0\n", r"api.yaml: lake.load_timeout_seconds: must be positive"),
        ("lake:\n  load_in_child: maybe\n", r"api.yaml: lake.load_in_child: expected true or false"),
        ("path: graphql\n", r"api.yaml: path: must start with /"),
        ("graphiql: yes please\n", r"api.yaml: graphiql: expected true or false"),
        ("limits: [1\n", r"api.yaml: \(file\): not valid YAML"),
        ("limits:\n  max_body_bytes: 100\n", r"api.yaml: limits.max_body_bytes: must be at least 1024"),
        ("audit:\n  enabled: sometimes\n", r"api.yaml: audit.enabled: expected true or false"),
        ("audit:\n  personal_keys: []\n", r"api.yaml: audit.personal_keys: must name at least one key"),
        ("audit:\n  personal_keys: [name, '--']\n", r"api.yaml: audit.personal_keys\[1\]: must contain a letter"),
        ("audit:\n  personal_keys: name\n", r"api.yaml: audit.personal_keys: expected a list"),
        ("audit:\n  level: debug\n", r"api.yaml: audit.level: unknown key"),
    ],
)
def test_bad_api_settings_are_refused_with_file_key_and_reason(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "api.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_api_settings(tmp_path)


def test_tokens_round_trip_and_carry_role_branch_and_pii() -> None:
    s = AuthSettings()
    hq = caller_from_header("Bearer " + issue_token(SECRET, s, "HQ", pii=True), SECRET, s)
    assert (hq.role, hq.scope, hq.pii) == ("HQ", None, True)
    br = caller_from_header("bearer " + issue_token(SECRET, s, "BRANCH", "T1-02"), SECRET, s)
    assert (br.role, br.scope, br.pii) == ("BRANCH", "T1-02", False)
    with pytest.raises(ValueError, match="branch"):
        issue_token(SECRET, s, "BRANCH")


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Basic dXNlcjpwdw==",
        "Bearer",
        "Bearer not.a.jwt",
        "Bearer " + issue_token(b"another-secret-of-enough-length-000", AuthSettings(), "HQ"),
        "Bearer " + issue_token(SECRET, AuthSettings(audience="someone-else"), "HQ"),
        "Bearer " + issue_token(SECRET, AuthSettings(issuer="someone-else"), "HQ"),
        "Bearer " + issue_token(SECRET, AuthSettings(), "HQ", now=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)),
        "Bearer "
        + jwt.encode(
            {"sub": "x", "role": "HQ", "iss": "postloan", "aud": "postloan-api", "iat": 1, "exp": 4102444800},
            None,
            algorithm="none",
        ),
        "Bearer "
        + jwt.encode(
            {"sub": "x", "role": "ADMIN", "iss": "postloan", "aud": "postloan-api", "iat": 1, "exp": 4102444800},
            SECRET,
            algorithm="HS256",
        ),
        "Bearer "
        + jwt.encode(
            {"sub": "x", "role": "BRANCH", "iss": "postloan", "aud": "postloan-api", "iat": 1, "exp": 4102444800},
            SECRET,
            algorithm="HS256",
        ),
        "Bearer "
        + jwt.encode(
            {
                "sub": "x",
                "role": "HQ",
                "pii": "yes",
                "iss": "postloan",
                "aud": "postloan-api",
                "iat": 1,
                "exp": 4102444800,
            },
            SECRET,
            algorithm="HS256",
        ),
    ],
)
def test_bad_credentials_are_refused(header: str | None) -> None:
    with pytest.raises(AuthError):
        caller_from_header(header, SECRET, AuthSettings())


def test_the_secret_comes_from_the_environment_and_must_be_long_enough() -> None:
    s = AuthSettings()
    assert secret_from_env(s, {"POSTLOAN_JWT_SECRET": "z" * 32}) == b"z" * 32
    for env in ({}, {"POSTLOAN_JWT_SECRET": "short"}):
        with pytest.raises(SecretError):
            secret_from_env(s, env)


def test_cursors_round_trip_and_refuse_tampering() -> None:
    codec = CursorCodec(SECRET)
    cursor = codec.encode("loans", ("LN0000000042",))
    assert codec.decode("loans", cursor) == ("LN0000000042",)
    assert "LN0000000042" not in cursor  # opaque, though not secret
    with pytest.raises(CursorError):
        codec.decode("inspectionTasks", cursor)
    with pytest.raises(CursorError):
        CursorCodec(b"other" * 8).decode("loans", cursor)
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    forged = base64.urlsafe_b64encode(raw.replace(b"LN0000000042", b"LN0000000043")).decode().rstrip("=")
    with pytest.raises(CursorError):
        codec.decode("loans", forged)
    for junk in ("", "%%%", "e30", "x" * 5000):
        with pytest.raises(CursorError):
            codec.decode("loans", junk)


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        (None, JSON),
        ("*/*", JSON),
        ("application/json", JSON),
        (GRAPHQL_RESPONSE, GRAPHQL_RESPONSE),
        (f"{GRAPHQL_RESPONSE}, application/json;q=0.9", GRAPHQL_RESPONSE),
        (f"application/json, {GRAPHQL_RESPONSE};q=0.5", JSON),
        ("text/html", JSON),
    ],
)
def test_content_negotiation(accept: str | None, media: str) -> None:
    assert negotiate(accept) == media


def test_money_is_exact_cents() -> None:
    values = [Decimal("0.00"), Decimal("12345678901234.56"), Decimal("-1.01"), None, Decimal("0.10")]
    arr = pa.array(values, pa.decimal128(18, 2))
    assert cents(arr).tolist() == [0, 1234567890123456, -101, 0, 10]
    assert cents(arr.slice(1, 2)).tolist() == [1234567890123456, -101]
    assert [str(money(c)) for c in (0, 5, 1234567890123456, -101)] == ["0.00", "0.05", "12345678901234.56", "-1.01"]


def test_readiness_reasons_name_no_data(tmp_path: Path) -> None:
    state = ServerState(tmp_path, ApiSettings(), SECRET)
    try:
        assert state.not_ready() == "no run ledger in the lake yet"
        state.refresh_error = "DeltaError"
        assert state.not_ready() == "the lake could not be read (DeltaError)"
    finally:
        state.reader.close()


def test_a_failed_refresh_is_logged_without_data_from_its_message() -> None:
    def fail(exc: Exception) -> str:
        try:
            raise exc
        except Exception as caught:
            return _describe_failure(caught)

    io = fail(FileNotFoundError("/lake/loan_snapshot/_delta_log/00000000000000000007.json"))
    assert "00000000000000000007.json" in io
    data = fail(ValueError("could not convert '张三' (110101199001011234) to decimal"))
    assert data.startswith("ValueError (message withheld") and "张三" not in data and "1101011990" not in data
