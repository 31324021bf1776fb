"""The HTTP server: strawberry's GraphQL view on Starlette, served by uvicorn.

- Every GraphQL request needs `Authorization: Bearer <JWT>`; without a valid one the answer is
  HTTP 401 with a GraphQL error body and no data. The GraphiQL page itself (when configured) is
  static and needs no token: the token goes in its headers pane.
- GraphQL over HTTP: `application/json` and `application/graphql-response+json` are both served
  (content negotiation on Accept); with the latter, a request error (unparsable or invalid
  document, bad variables) is HTTP 400 without a `data` entry, as the spec asks.
- Limits: request body and query-string size here; depth, tokens and aliases as validation; page
  sizes in the resolvers; the per-request time budget both in resolvers and around execution.
  One operation per request: a batch (a JSON array body) is refused with HTTP 400.
- Every GraphQL request is audited, refused ones included (api/audit_log.py).
- `/healthz` answers 200 while the process serves HTTP (liveness); `/readyz` answers 200 only when
  a SUCCEEDED run is loaded and served, else 503 with the reason (readiness). No token, no data.
- The lake is polled in the background; a new SUCCEEDED run is loaded and swapped in without a
  restart (api/lake.py).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import json
import logging
import os
import queue
import secrets
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import AsyncIterator, Hashable, Mapping
from dataclasses import replace
from logging.handlers import QueueHandler, QueueListener
from pathlib import Path
from typing import Any, TextIO, cast

import anyio
import uvicorn
from cross_web import HTTPException
from graphql import GraphQLError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult

from api.audit_log import AUDIT_LOGGER, AuditTrail, error_code, note_of
from api.auth import AuthError, Caller, issue_token, secret_from_env
from api.context import Context
from api.cursor import CursorCodec
from api.lake import Catalog, LakeReader
from api.schema import SERVED_ON_SWAP, build_schema
from api.settings import ApiSettings, load_api_settings

log = logging.getLogger("postloan.api")

JSON = "application/json"
GRAPHQL_RESPONSE = "application/graphql-response+json"


def negotiate(accept: str | None) -> str:
    """The response media type for an Accept header (application/json when unspecified)."""
    if not accept:
        return JSON
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept.split(",")):
        fields = [f.strip() for f in part.split(";")]
        media, q = fields[0].lower(), 1.0
        for param in fields[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                with contextlib.suppress(ValueError):
                    q = float(value)
        if media in (GRAPHQL_RESPONSE, JSON, "*/*", "application/*") and q > 0:
            ranked.append((-q, position, media))
    if not ranked:
        return JSON
    best = sorted(ranked)[0][2]
    return GRAPHQL_RESPONSE if best == GRAPHQL_RESPONSE else JSON


def error_body(message: str, code: str) -> bytes:
    return json.dumps({"errors": [{"message": message, "extensions": {"code": code}}]}).encode("utf-8")


class BodyLimit:
    """Refuses request bodies over the configured size (413) before the view reads them, and
    query strings over it (414): a GET carries its document in the URL."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if len(scope.get("query_string") or b"") > self.max_bytes:
            body = error_body(
                f"query string over {self.max_bytes} bytes: send the query in a POST body", "URI_TOO_LONG"
            )
            await Response(body, status_code=414, media_type=JSON)(scope, _no_receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        body = error_body(f"request body over {self.max_bytes} bytes", "PAYLOAD_TOO_LARGE")
        response = Response(body, status_code=413, media_type=JSON)
        await response(scope, _no_receive, send)


class _TooLarge(Exception):
    pass


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


_ENCODED = "\x00encoded"


# What the answer depends on: ("served", the served runs) for answers about the data, ("ledger",
# the ledger's version) for answers that read the runs themselves (Context.reads_ledger).
Epoch = tuple[str, Hashable]
# (epoch, caller, query, variables as JSON, operation name)
CacheKey = tuple[Epoch, Caller, str, str, str | None]
# A request as asked: (query, variables as JSON, operation name)
Asked = tuple[str, str, str | None]


def served_epoch(catalog: Catalog) -> Epoch:
    return ("served", catalog.served_version)


def ledger_epoch(catalog: Catalog) -> Epoch:
    return ("ledger", catalog.ledger_version)


def answer_epoch(context: Context) -> Epoch:
    """The epoch an executed answer is cached under."""
    return ledger_epoch(context.catalog) if context.reads_ledger else served_epoch(context.catalog)


class ResponseCache:
    """Encoded answers of successful requests, keyed by what they depend on, caller, query and
    variables.

    A run's data never changes once loaded, so an identical request from an identical caller
    has an identical answer while the same runs are served; an answer that lists the ledger's
    runs (or looks one up) holds while the ledger does. Keyed by the served runs rather than the
    ledger version, a RUNNING or FAILED row in the ledger (a new catalog, the same data) leaves
    the cached answers valid. The caller (role, branch, pii, subject) is part of the key: row-level
    security and masking are never shared between callers. Bounded in bytes; LRU.
    """

    def __init__(self, max_bytes: int, max_entry_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self._items: OrderedDict[CacheKey, str] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        self.warmed = 0  # answers made ahead for a new catalog (ServerState.warm_cache)
        # The event loop reads and fills it; the poller's thread fills it ahead of a swap.
        self._lock = threading.Lock()

    def asked(self, data: Any) -> Asked | None:
        """The request as a cache key's tail, or None when it cannot be cached."""
        if self.max_bytes <= 0 or not isinstance(data.query, str):
            return None
        try:
            variables = json.dumps(data.variables, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError):
            return None
        return (data.query, variables, data.operation_name)

    def get(self, catalog: Catalog, caller: Caller, asked: Asked) -> str | None:
        """The cached answer on `catalog`: about its served data, or about its ledger."""
        with self._lock:
            for epoch in (served_epoch(catalog), ledger_epoch(catalog)):
                key: CacheKey = (epoch, caller, *asked)
                body = self._items.get(key)
                if body is not None:
                    self._items.move_to_end(key)
                    self.hits += 1
                    return body
            self.misses += 1
            return None

    def put(self, key: CacheKey, body: str) -> None:
        size = len(body)
        with self._lock:
            if size > self.max_entry_bytes or key in self._items:
                return
            self._items[key] = body
            self._bytes += size
            while self._bytes > self.max_bytes and self._items:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped)

    def recent(self, catalog: Catalog, count: int) -> list[CacheKey]:
        """The `count` requests last answered on `catalog`, most recent first, with the epoch each
        was cached under."""
        current = {served_epoch(catalog), ledger_epoch(catalog)}
        with self._lock:
            keys = list(reversed(self._items))
        return [key for key in keys if key[0] in current][:count]


class PostloanGraphQL(GraphQL):  # type: ignore[type-arg]
    """strawberry's ASGI view with authentication, content negotiation and the time budget."""

    def __init__(self, state: ServerState) -> None:
        super().__init__(
            state.schema,
            graphql_ide="graphiql" if state.settings.graphiql else None,
            allow_queries_via_get=True,
            multipart_uploads_enabled=False,
        )
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            response: Response = Response("GraphQL over HTTP only", status_code=404)
            await response(scope, receive, send)
            return
        request = Request(scope=scope, receive=receive)
        media = negotiate(request.headers.get("accept"))
        try:
            response = await self.run(request)
        except HTTPException as e:
            headers = {"WWW-Authenticate": 'Bearer realm="postloan"'} if e.status_code == 401 else {}
            if e.status_code == 405:
                headers["Allow"] = "GET, POST"
            code = {401: "UNAUTHENTICATED", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(
                e.status_code, "BAD_REQUEST"
            )
            note_of(scope).errors.append(code)
            response = Response(
                error_body(e.reason, code),
                status_code=e.status_code,
                media_type=f"{media}; charset=utf-8",
                headers=headers,
            )
        except _TooLarge:
            raise  # BodyLimit answers 413
        except Exception as exc:
            # Answered here rather than by Starlette, whose log line would carry the message (which
            # may quote data): type and frames only, and a GraphQL error body.
            frames = "".join(traceback.format_tb(exc.__traceback__)[-4:])
            log.error("unexpected %s in the GraphQL view\n%s", type(exc).__name__, frames)
            note_of(scope).errors.append("INTERNAL_SERVER_ERROR")
            response = Response(
                error_body("Internal server error", "INTERNAL_SERVER_ERROR"),
                status_code=500,
                media_type=f"{media}; charset=utf-8",
            )
        await response(scope, receive, send)

    # -- context: who is calling, and which catalog answers ------------------------------------
    async def get_context(self, request: Any, response: Any) -> Context:  # type: ignore[override]
        caller = self._authenticate(request)
        note_of(request.scope).caller = caller
        response.media_type = negotiate(request.headers.get("accept"))
        request.state.sub_response = response
        settings = self.state.settings
        return Context(
            caller=caller,
            catalog=self.state.reader.catalog(),
            reader=self.state.reader,
            settings=settings,
            codec=self.state.codec,
            deadline=time.monotonic() + settings.limits.time_budget_ms / 1000.0,
            request=request,
            response=response,
        )

    def _authenticate(self, request: Request) -> Caller:
        if self._is_ide_page(request):
            return Caller(subject="graphiql-page", role="BRANCH", branch_id="\x00none", pii=False)
        try:
            return self.state.authenticate(request.headers.get("authorization"))
        except AuthError as exc:
            raise HTTPException(401, str(exc)) from None

    # -- request bodies: one operation, as a JSON object ----------------------------------------
    def parse_json(self, data: str | bytes) -> Any:
        parsed = super().parse_json(data)
        if not isinstance(parsed, dict | list):
            raise HTTPException(400, 'expected a JSON object: {"query": ..., "variables": {...}}')
        return parsed

    def _validate_batch_request(self, request_data: list[Any], protocol: Any) -> None:
        # A batch would run several operations under one request's limits (aliases, tokens, time
        # budget) and answer them together: one operation per request, HTTP/1.1 keep-alive or
        # HTTP/2 for many.
        raise HTTPException(400, "batched requests (a JSON array) are not supported: send one operation per request")

    def _is_ide_page(self, request: Request) -> bool:
        return (
            self.graphql_ide is not None
            and request.method == "GET"
            and "text/html" in request.headers.get("accept", "")
            and "query" not in request.query_params
        )

    # -- execution within the time budget --------------------------------------------------------
    async def execute_single(  # type: ignore[override]
        self,
        request: Any,
        request_adapter: Any,
        sub_response: Any,
        context: Any,
        root_value: Any,
        request_data: Any,
    ) -> ExecutionResult:
        note = note_of(request.scope)
        note.query, note.operation_name, note.variables = (
            request_data.query,
            request_data.operation_name,
            request_data.variables,
        )
        cache = self.state.cache
        asked = cache.asked(request_data)
        if asked is not None:
            hit = cache.get(context.catalog, context.caller, asked)
            if hit is not None:
                request.state.encoded = hit
                note.cached = note.executed = True
                return ExecutionResult(data=None, errors=None)
            request.state.cache_asked = (context, asked)
        result = await self._execute_within_budget(
            request, request_adapter, sub_response, context, root_value, request_data
        )
        errors = result.errors or []
        note.errors.extend(error_code(e) for e in errors)
        # Executed: the document was valid and the variables coerced (an error with a path, or data).
        note.executed = result.data is not None or any(e.path is not None for e in errors)
        return result

    async def _execute_within_budget(
        self,
        request: Any,
        request_adapter: Any,
        sub_response: Any,
        context: Any,
        root_value: Any,
        request_data: Any,
    ) -> ExecutionResult:
        remaining = max(context.deadline - time.monotonic(), 0.001)
        try:
            return await asyncio.wait_for(
                super().execute_single(
                    request=request,
                    request_adapter=request_adapter,
                    sub_response=sub_response,
                    context=context,
                    root_value=root_value,
                    request_data=request_data,
                ),
                timeout=remaining,
            )
        except TimeoutError:
            budget = self.state.settings.limits.time_budget_ms
            error = GraphQLError(
                f"the request used up its time budget of {budget} ms", extensions={"code": "TIME_BUDGET_EXCEEDED"}
            )
            return ExecutionResult(data=None, errors=[error])

    # -- responses -------------------------------------------------------------------------------
    async def process_result(self, request: Any, result: ExecutionResult) -> GraphQLHTTPResponse:
        cached = getattr(request.state, "encoded", None)
        if cached is not None:
            return cast(GraphQLHTTPResponse, {_ENCODED: cached})
        errors = result.errors or []
        body: GraphQLHTTPResponse = {}
        request_error = (
            result.data is None
            and bool(errors)
            and all(e.path is None and (e.extensions or {}).get("code") != "TIME_BUDGET_EXCEEDED" for e in errors)
        )
        if not request_error:
            body["data"] = result.data
        if errors:
            body["errors"] = [e.formatted for e in errors]
        if result.extensions:
            body["extensions"] = result.extensions
        sub_response = getattr(request.state, "sub_response", None)
        if request_error and sub_response is not None and sub_response.media_type == GRAPHQL_RESPONSE:
            sub_response.status_code = 400
        cacheable = getattr(request.state, "cache_asked", None)
        if cacheable is not None and not errors and not result.extensions:
            context, asked = cacheable
            encoded = self.encode_json(body)
            self.state.cache.put((answer_epoch(context), context.caller, *asked), encoded)
            return cast(GraphQLHTTPResponse, {_ENCODED: encoded})
        return body

    def create_response(self, response_data: Any, sub_response: Response) -> Response:
        media = getattr(sub_response, "media_type", None) or JSON
        encoded = response_data.get(_ENCODED) if isinstance(response_data, dict) else None
        response = Response(
            encoded if encoded is not None else self.encode_json(response_data),
            status_code=sub_response.status_code or 200,
            media_type=f"{media}; charset=utf-8",
        )
        response.headers.raw.extend(sub_response.headers.raw)
        return response

    def encode_json(self, data: object) -> str:
        return encode_json(data)


def encode_json(data: object) -> str:
    """A response body as the server sends it (and caches it)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


class ServerState:
    """What the app holds for its lifetime: settings, secret, reader, schema, cursor codec."""

    def __init__(self, lake: Path, settings: ApiSettings, secret: bytes) -> None:
        self.lake = Path(lake)
        self.settings = settings
        self.secret = secret
        self.reader = LakeReader(self.lake, settings.lake, preload=SERVED_ON_SWAP)
        self.codec = CursorCodec(secret)
        self.schema = build_schema(settings)
        self.cache = ResponseCache(settings.response_cache_mb * 2**20, max_entry_bytes=2**20)
        self.refresh_error: str | None = None  # the type of the last failed refresh, until one succeeds
        # The catalog the last poll replaced, held until the next poll so that its date is freed
        # there, in the poller's thread, and never by a request (see _refresh_logged).
        self.retiring: Catalog | None = None

    def warm_cache(self, catalog: Catalog) -> int:
        """Answer the requests most recently asked again on `catalog` before it is published, and
        cache the answers under it; returns how many were cached.

        A new catalog serving other runs makes the cached answers about the data stale (one that
        only adds a ledger row, those about the runs), and the new date's first answers are its
        most expensive (its work-list codes, filtered portfolios and pages are built on first use):
        in the soak, the second after a swap held every connection for up to a second
        (docs/api.md, "The swap window"). Made here, in the poller's thread while the old catalog
        still serves, they are ready when it swaps. Each is made exactly as a request of the same
        caller would be (row-level security and masking included), and only answers without
        errors are kept, as for requests."""
        count = self.settings.response_cache_warm_entries
        if count <= 0 or self.cache.max_bytes <= 0:
            return 0
        still_valid = served_epoch(catalog)
        stale = [key for key in self.cache.recent(self.reader.catalog(), count) if key[0] != still_valid]
        return asyncio.run(self._warm(catalog, stale)) if stale else 0

    async def _warm(self, catalog: Catalog, stale: list[CacheKey]) -> int:
        budget = self.settings.limits.time_budget_ms / 1000.0
        warmed = 0
        for _, caller, query, variables, operation in stale:
            context = Context(
                caller=caller,
                catalog=catalog,
                reader=self.reader,
                settings=self.settings,
                codec=self.codec,
                deadline=time.monotonic() + budget,
            )
            result = await self.schema.execute(
                query, variable_values=json.loads(variables), context_value=context, operation_name=operation
            )
            if result.errors or result.extensions:
                continue
            key: CacheKey = (answer_epoch(context), caller, query, variables, operation)
            self.cache.put(key, encode_json({"data": result.data}))
            warmed += 1
        self.cache.warmed += warmed
        return warmed

    def authenticate(self, header: str | None) -> Caller:
        from api.auth import caller_from_header

        return caller_from_header(header, self.secret, self.settings.auth)

    def root_fields(self) -> frozenset[str]:
        """The Query type's field names (the audit lists only these), introspection included."""
        query = self.schema._schema.query_type
        names = set(query.fields) if query is not None else set()
        return frozenset(names | {"__schema", "__type", "__typename"})

    def not_ready(self) -> str | None:
        """Why data queries cannot be answered yet; None when a SUCCEEDED run is loaded and served."""
        catalog = self.reader.catalog()
        if catalog.latest_date is None:
            if self.refresh_error is not None:
                return f"the lake could not be read ({self.refresh_error})"
            if catalog.ledger_version < 0:
                return "no run ledger in the lake yet"
            return "no SUCCEEDED nightly run in the lake yet"
        run = catalog.served[catalog.latest_date]
        loaded = catalog.loaded.get(run.key)
        if loaded is None or not loaded.done() or loaded.exception() is not None:
            return "the latest business date is not loaded"
        return None


def create_app(lake: Path, settings: ApiSettings, secret: bytes, poll: bool = True) -> Starlette:
    """The ASGI app. The first refresh runs before it accepts requests; then a poller follows the ledger."""
    state = ServerState(lake, settings, secret)
    graphql: ASGIApp = BodyLimit(PostloanGraphQL(state), max_bytes=settings.limits.max_body_bytes)
    if settings.audit.enabled:
        graphql = AuditTrail(graphql, settings.audit, settings.limits.max_tokens, state.root_fields())
    no_store = {"Cache-Control": "no-store"}

    async def health(request: Request) -> JSONResponse:
        # Liveness: the process answers HTTP. Whether it has data is readiness (/readyz).
        return JSONResponse({"status": "ok"}, headers=no_store)

    async def ready(request: Request) -> JSONResponse:
        reason = state.not_ready()
        if reason is not None:
            return JSONResponse({"status": "not-ready", "reason": reason}, status_code=503, headers=no_store)
        catalog = state.reader.catalog()
        latest = catalog.latest_date
        return JSONResponse(
            {
                "status": "ready",
                "latestBusinessDate": latest.isoformat() if latest else None,
                "businessDates": len(catalog.served),
            },
            headers=no_store,
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(_refresh_logged, state)
        # What is alive now (modules, schema, the first date's objects) stays alive: the collector
        # need not walk it again. Its full passes then cost milliseconds instead of 40-70 ms with
        # the interpreter lock held, in whichever request triggers them. Nothing is in flight yet,
        # so no request's garbage is frozen with it.
        gc.collect()
        gc.freeze()
        task = asyncio.create_task(_poll(state)) if poll else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            state.reader.close()

    app = Starlette(
        routes=[
            # Only the GraphQL route reads a request body; the limit and the audit wrap it.
            Route(settings.path, graphql, methods=["GET", "POST"]),
            Route("/healthz", health, methods=["GET"]),
            Route("/readyz", ready, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.postloan = state
    return app


def _refresh_logged(state: ServerState) -> None:
    if state.retiring is not None:
        # The requests answered on the catalog replaced at the last poll are done by now, but each
        # left a reference cycle (graphql-core's execution context) holding its context, and
        # through it that catalog's data: a whole date, 1.2 GB at 1M loans. One pass here frees
        # the cycles; the date itself goes when the poller lets go of it, just after. Freed in a
        # request instead (by whichever collection found the last cycle), unmapping its memory
        # held the event loop for 100-200 ms in the swap's soak (docs/api.md, "The swap window,
        # third part"); here the unmapping runs without the interpreter lock.
        started = time.monotonic()
        gc.collect()
        state.retiring = None
        log.info("replaced run released in %.0f ms", (time.monotonic() - started) * 1000)
    previous = state.reader.catalog()
    try:
        if state.reader.refresh(before_publish=state.warm_cache):
            state.retiring = previous
        state.refresh_error = None
    except Exception as exc:  # keep serving what we have; say why without data
        state.refresh_error = type(exc).__name__
        log.error("lake refresh failed, still serving the previous run: %s", _describe_failure(exc))


def _describe_failure(exc: BaseException) -> str:
    """An exception for the log: I/O errors with their message (paths, versions), any other by
    type and frames only, since a data error's message may quote a value (personal data)."""
    if isinstance(exc, OSError) or type(exc).__module__.startswith("deltalake"):
        return f"{type(exc).__name__}: {exc}"
    frames = "".join(traceback.format_tb(exc.__traceback__)[-3:])
    return f"{type(exc).__name__} (message withheld: it may quote data)\n{frames}"


async def _poll(state: ServerState) -> None:
    while True:
        await asyncio.sleep(state.settings.lake.poll_seconds)
        await anyio.to_thread.run_sync(_refresh_logged, state)


def _uvicorn_config(app: ASGIApp, settings: ApiSettings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        access_log=settings.access_log,
        log_level="info",
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=5,
    )


def serve(
    lake: Path,
    conf: Path,
    host: str | None = None,
    port: int | None = None,
    graphiql: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """`postloan serve`: serve the lake until interrupted (exit 0), 2 for bad settings or secret."""
    from api.auth import SecretError
    from jobs.config import ConfigError

    try:
        settings = load_api_settings(conf)
        secret = secret_from_env(settings.auth, dict(environ) if environ is not None else None)
    except (ConfigError, SecretError) as exc:
        print(f"postloan: {exc}", file=sys.stderr)
        return 2
    settings = replace(
        settings,
        host=host or settings.host,
        port=settings.port if port is None else port,
        graphiql=settings.graphiql if graphiql is None else graphiql,
    )
    if not (Path(lake) / "run_ledger" / "_delta_log").is_dir():
        print(f"postloan: {lake} has no run ledger yet; serving it anyway (no data until a run succeeds)")
    _configure_logging()
    _run(Path(lake), Path(conf), settings, secret)
    return 0


def _run(lake: Path, conf: Path, settings: ApiSettings, secret: bytes) -> None:
    if settings.workers == 1:
        uvicorn.Server(_uvicorn_config(create_app(lake, settings, secret), settings)).run()
        return
    # Several processes: uvicorn imports the app factory in each; it finds its settings here.
    os.environ[_ENV_LAKE] = str(lake.resolve())
    os.environ[_ENV_CONF] = str(conf.resolve())
    os.environ[_ENV_OVERRIDES] = json.dumps(
        {"host": settings.host, "port": settings.port, "graphiql": settings.graphiql}
    )
    uvicorn.run(
        "api.server:app_from_env",
        factory=True,
        workers=settings.workers,
        host=settings.host,
        port=settings.port,
        access_log=settings.access_log,
        server_header=False,
        timeout_graceful_shutdown=5,
    )


_ENV_LAKE = "POSTLOAN_API_LAKE"
_ENV_CONF = "POSTLOAN_API_CONF"
_ENV_OVERRIDES = "POSTLOAN_API_OVERRIDES"


def app_from_env() -> Starlette:
    """App factory of a worker process (`workers` > 1)."""
    _configure_logging()
    settings = load_api_settings(Path(os.environ[_ENV_CONF]))
    overrides = json.loads(os.environ.get(_ENV_OVERRIDES, "{}"))
    settings = replace(settings, **overrides)
    return create_app(Path(os.environ[_ENV_LAKE]), settings, secret_from_env(settings.auth))


def serve_demo(lake: Path, conf: Path) -> int:
    """End of `postloan demo`: serve the demo lake with GraphiQL on, and print the URL and a token."""
    from api.auth import MIN_SECRET_BYTES
    from jobs.config import ConfigError

    try:
        settings = replace(load_api_settings(conf), graphiql=True)
    except ConfigError as exc:
        print(f"postloan: {exc}", file=sys.stderr)
        return 2
    environ = dict(os.environ)
    value = environ.get(settings.auth.secret_env, "")
    if len(value.encode("utf-8")) < MIN_SECRET_BYTES:
        # A throwaway secret for this demo process only; set the variable to mint more tokens.
        environ[settings.auth.secret_env] = secrets.token_urlsafe(48)
    secret = secret_from_env(settings.auth, environ)
    token = issue_token(secret, settings.auth, "HQ", pii=False, subject="demo")
    url = f"http://{settings.host}:{settings.port}{settings.path}"
    print(f"API: {url}  (GraphiQL: open it in a browser; queries: docs/api.md)")
    print("token (HQ, personal data masked), send as  Authorization: Bearer <token>")
    print(token, flush=True)
    _configure_logging()
    os.environ[settings.auth.secret_env] = environ[settings.auth.secret_env]  # worker processes read it
    _run(Path(lake), Path(conf), settings, secret)
    return 0


class ServerLogFormat(logging.Formatter):
    """The server's lines: the audit log's JSON on their own (no prefix) for log shippers to
    parse, every other record with its time, level and logger."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage() if record.name == AUDIT_LOGGER else super().format(record)


def background_log(stream: TextIO) -> tuple[logging.Handler, QueueListener]:
    """A handler that only queues records, and the started thread that writes them to `stream`.

    The event loop writes an audit line per request: written in place, each waited on the stream,
    and a log file on a disk busy with the batch's writes (the kernel holds back writers while
    much is waiting to be flushed) held every request for over a second (docs/api.md, "Soak while
    the batch writes at the lowest CPU priority"). Queued, only the writing thread waits.
    """
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    lines = logging.StreamHandler(stream)
    lines.setFormatter(ServerLogFormat())
    listener = QueueListener(records, lines)
    listener.start()
    return QueueHandler(records), listener


_log_writer: QueueListener | None = None


def _configure_logging() -> None:
    global _log_writer
    if _log_writer is not None:
        return
    handler, _log_writer = background_log(sys.stderr)
    atexit.register(_log_writer.stop)  # writes what is still queued
    root = logging.getLogger()
    if not root.handlers:
        root.setLevel(logging.INFO)
        root.addHandler(handler)
    audit = logging.getLogger(AUDIT_LOGGER)
    if not audit.handlers:
        audit.addHandler(handler)
        audit.propagate = False
