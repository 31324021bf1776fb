"""The audit log: who asked what, one JSON line per GraphQL request.

`AuditTrail`, an ASGI middleware around the GraphQL route, writes the line on the
`postloan.api.audit` logger (INFO) once the answer is sent. The view fills in the request's
`AuditNote` as the request goes: the caller once the token is checked, the operation and its
variables once the body is parsed, the error codes once it is answered. A request refused before
that (no or bad token, a body too large, a batch) is written too, with what is known.

Never written: the query text (only a hash of it), error messages and answers (any of them may
carry personal data). Variable values are written only when they can be told apart from personal
data; any other value becomes "***":

- the value of a variable whose key names personal data (`audit.personal_keys`), at any depth;
- the value of a variable the operation does not declare (the API never reads it, and a client
  could put anything there), and every value of a request that was not executed (unparsable,
  invalid, or with variables the schema refused: their keys are then free text too);
- a text that does not look like a code or an id (a letter, then letters, digits, `_ . : -`, at
  most 64 characters) or a date: names, ID numbers and phone numbers never do.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    parse,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import Caller
from api.settings import AuditSettings

AUDIT_LOGGER = "postloan.api.audit"
REDACTED = "***"
NOTE_KEY = "postloan.audit"  # where the note lives in the ASGI scope's state
# The texts kept as they are: codes and ids (loan, branch, product, run ids, enum values) and dates.
CODE_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}|\d{4}-\d{2}-\d{2}")
MAX_ITEMS = 50  # items kept of a list, keys of an object
MAX_NESTING = 6  # levels of nested objects and lists kept
MAX_FIELDS = 10  # root field names listed
MAX_NAME = 64  # characters kept of an operation name
MAX_CACHED_QUERY = 4096  # documents up to this length have their description cached

log = logging.getLogger(AUDIT_LOGGER)

# The error code of a request refused before execution, when the view said nothing more precise.
STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    414: "URI_TOO_LONG",
    500: "INTERNAL_SERVER_ERROR",
}


@dataclass
class AuditNote:
    """What the view learned about one request; raw, in memory only (redacted when written)."""

    caller: Caller | None = None
    query: str | None = None
    operation_name: str | None = None
    variables: Any = None
    errors: list[str] = field(default_factory=list)
    cached: bool = False
    # The variables passed the schema's coercion and the operation ran (variable values are logged)
    executed: bool = False


def note_of(scope: Scope) -> AuditNote:
    """The request's note (created on first use; a throwaway one when auditing is off)."""
    state = scope.setdefault("state", {})
    note = state.get(NOTE_KEY)
    if not isinstance(note, AuditNote):
        note = state[NOTE_KEY] = AuditNote()
    return note


def error_code(error: GraphQLError) -> str:
    """`extensions.code`, or what kind of error it is when the error has none."""
    code = (error.extensions or {}).get("code")
    if isinstance(code, str) and code:
        return code
    if error.path is not None:
        return "INTERNAL_SERVER_ERROR"
    if error.message.startswith("Syntax Error"):
        return "GRAPHQL_PARSE_FAILED"
    return "GRAPHQL_VALIDATION_FAILED"


# ------------------------------------------------------------------------------------------------
# Redaction


def _squash(key: str) -> str:
    return "".join(c for c in key.casefold() if c.isalnum())


class Redactor:
    """Replaces the values under keys naming personal data, and any text that is not code-like,
    with "***", at any depth; long lists and deep nesting are elided."""

    def __init__(self, personal_keys: Sequence[str]) -> None:
        self.keys = tuple(k for k in (_squash(k) for k in personal_keys) if k)

    def is_personal(self, key: str) -> bool:
        squashed = _squash(key)
        return any(k in squashed for k in self.keys)

    def __call__(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, Mapping):
            if depth >= MAX_NESTING:
                return "..."
            return {
                str(k): REDACTED if self.is_personal(str(k)) else self(v, depth + 1)
                for k, v in islice(value.items(), MAX_ITEMS)
            }
        if isinstance(value, list | tuple):
            if depth >= MAX_NESTING:
                return "..."
            return [self(v, depth + 1) for v in value[:MAX_ITEMS]]
        if isinstance(value, str):
            return value if CODE_LIKE.fullmatch(value) else REDACTED
        if value is None or isinstance(value, bool | int | float):
            return value
        return REDACTED

    def variables(self, variables: Any, declared: frozenset[str] | None, executed: bool) -> Any:
        """The variables as logged: values only of an executed operation's declared variables,
        and never a personal one."""
        if variables is None:
            return None
        if not isinstance(variables, Mapping):
            return REDACTED
        out: dict[str, Any] = {}
        for key, value in islice(variables.items(), MAX_ITEMS):
            name = str(key)
            known = executed and declared is not None and name in declared
            out[name] = self(value, 1) if known and not self.is_personal(name) else REDACTED
        return out


# ------------------------------------------------------------------------------------------------
# What was asked


@dataclass(frozen=True)
class Operation:
    """The audited description of a request's document (never the document itself)."""

    name: str | None = None
    kind: str | None = None  # query | mutation | subscription
    fields: tuple[str, ...] = ()  # the root fields asked for, schema names (not aliases)
    variables: frozenset[str] | None = None  # declared; None when the document does not parse


def describe(query: Any, operation_name: Any, max_tokens: int, root_fields: frozenset[str]) -> Operation:
    """The operation a request names (or its only one), its root fields and declared variables.
    Only names the document defines are kept: an operation name it does not define is "***"."""
    name = operation_name if isinstance(operation_name, str) and operation_name else None
    if not isinstance(query, str) or not query:
        return Operation(name=REDACTED if name is not None else None)
    if len(query) <= MAX_CACHED_QUERY:
        return _describe_cached(query, name, max_tokens, root_fields)
    return _describe(query, name, max_tokens, root_fields)


@functools.lru_cache(maxsize=1024)
def _describe_cached(query: str, name: str | None, max_tokens: int, root_fields: frozenset[str]) -> Operation:
    return _describe(query, name, max_tokens, root_fields)


def _describe(query: str, name: str | None, max_tokens: int, root_fields: frozenset[str]) -> Operation:
    try:
        document = parse(query, no_location=True, max_tokens=max_tokens)
    except GraphQLError:
        return Operation(name=REDACTED if name is not None else None)
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    if name is not None:
        chosen = next((o for o in operations if o.name is not None and o.name.value == name), None)
    else:
        chosen = operations[0] if len(operations) == 1 else None
    if chosen is None:
        # a name the document does not define is the client's free text
        return Operation(name=REDACTED if name is not None else None, variables=frozenset())
    fields: list[str] = []
    _root_fields(chosen.selection_set, fragments, root_fields, fields, set())
    return Operation(
        name=chosen.name.value[:MAX_NAME] if chosen.name is not None else None,
        kind=chosen.operation.value,
        fields=tuple(fields),
        variables=frozenset(v.variable.name.value for v in chosen.variable_definitions or ()),
    )


def _root_fields(
    selections: SelectionSetNode,
    fragments: Mapping[str, FragmentDefinitionNode],
    known: frozenset[str],
    out: list[str],
    seen: set[str],
) -> None:
    """Field names of a selection set, through fragments; only names the root type has (an
    unknown name is the client's text, not the schema's)."""
    for selection in selections.selections:
        if len(out) >= MAX_FIELDS:
            return
        if isinstance(selection, FieldNode):
            field_name = selection.name.value
            if field_name in known and field_name not in out:
                out.append(field_name)
        elif isinstance(selection, InlineFragmentNode):
            _root_fields(selection.selection_set, fragments, known, out, seen)
        elif isinstance(selection, FragmentSpreadNode):
            spread = selection.name.value
            fragment = fragments.get(spread)
            if fragment is not None and spread not in seen:
                seen.add(spread)
                _root_fields(fragment.selection_set, fragments, known, out, seen)


# ------------------------------------------------------------------------------------------------
# The middleware


class AuditTrail:
    """Times each request to the wrapped app and writes its audit line after the answer."""

    def __init__(self, app: ASGIApp, settings: AuditSettings, max_tokens: int, root_fields: frozenset[str]) -> None:
        self.app = app
        self.redactor = Redactor(settings.personal_keys)
        self.max_tokens = max_tokens
        self.root_fields = root_fields

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        note = note_of(scope)
        started = time.perf_counter()
        status: int | None = None

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            note.errors.append("INTERNAL_SERVER_ERROR")
            status = status or 500
            raise
        finally:
            duration_ms = (time.perf_counter() - started) * 1000.0
            if log.isEnabledFor(logging.INFO):
                self.write(scope, note, status, duration_ms)

    def write(self, scope: Scope, note: AuditNote, status: int | None, duration_ms: float) -> None:
        try:
            record = self.record(scope, note, status, duration_ms)
            log.info(json.dumps(record, ensure_ascii=False, separators=(",", ":")), extra={"audit": record})
        except Exception as exc:  # the audit never breaks a request; say why without data
            log.error("audit line not written: %s", type(exc).__name__)

    def record(self, scope: Scope, note: AuditNote, status: int | None, duration_ms: float) -> dict[str, Any]:
        """The audit line of a request, as a JSON-ready dict (docs/api.md, "Audit log")."""
        operation = describe(note.query, note.operation_name, self.max_tokens, self.root_fields)
        errors = list(dict.fromkeys(note.errors))
        if not errors and status is not None and status >= 400:
            errors = [STATUS_CODES.get(status, f"HTTP_{status}")]
        caller = note.caller
        query_hash = (
            hashlib.sha256(note.query.encode("utf-8")).hexdigest()[:16] if isinstance(note.query, str) else None
        )
        return {
            "ts": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "event": "graphql.request",
            "subject": caller.subject if caller else None,
            "role": caller.role if caller else None,
            "branch": caller.branch_id if caller else None,
            "pii": caller.pii if caller else None,
            "method": scope.get("method"),
            "operation": operation.name,
            "operationType": operation.kind,
            "fields": list(operation.fields),
            "queryHash": query_hash,
            "variables": self.redactor.variables(note.variables, operation.variables, note.executed),
            "durationMs": round(duration_ms, 2),
            "status": status,
            "outcome": "error" if errors else "ok",
            "errors": errors[:10],
            "cached": note.cached,
        }
