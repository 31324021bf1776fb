"""`postloan token` and `postloan serve` on the command line."""

from __future__ import annotations

import pytest

from api.auth import caller_from_header
from api.settings import AuthSettings
from jobs.cli import main

SECRET = "c" * 40


def test_token_command_prints_a_token_the_server_accepts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POSTLOAN_JWT_SECRET", SECRET)
    assert main(["token", "--role", "BRANCH", "--branch", "T1-02", "--pii"]) == 0
    printed = capsys.readouterr().out.strip()
    caller = caller_from_header(f"Bearer {printed}", SECRET.encode(), AuthSettings())
    assert (caller.role, caller.branch_id, caller.pii) == ("BRANCH", "T1-02", True)
    assert main(["token", "--role", "HQ"]) == 0


def test_token_and_serve_refuse_without_a_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    monkeypatch.delenv("POSTLOAN_JWT_SECRET", raising=False)
    assert main(["token", "--role", "HQ"]) == 2
    assert "POSTLOAN_JWT_SECRET" in capsys.readouterr().err
    assert main(["serve", "--lake", str(tmp_path)]) == 2
    monkeypatch.setenv("POSTLOAN_JWT_SECRET", SECRET)
    assert main(["token", "--role", "BRANCH"]) == 2
    assert main(["token", "--role", "HQ", "--branch", "T1-01"]) == 2
