"""Errors the client is meant to read (kept by error masking) and their `extensions.code`."""

from __future__ import annotations

from typing import Any


class PublicError(Exception):
    """An error whose message is safe and useful to show: it says what was wrong with the request."""

    code = "BAD_USER_INPUT"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.extensions: dict[str, Any] = {"code": self.code, **details}


class BadInput(PublicError):
    code = "BAD_USER_INPUT"


class Forbidden(PublicError):
    code = "FORBIDDEN"


class NotFound(PublicError):
    code = "NOT_FOUND"


class Unavailable(PublicError):
    """The lake cannot answer (no successful run for the date, data not loadable)."""

    code = "DATA_UNAVAILABLE"


class TimeBudgetExceeded(PublicError):
    code = "TIME_BUDGET_EXCEEDED"
