"""The per-request context: the caller, the pinned catalog, the readers, the limits and the clock."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

from api.auth import Caller
from api.cursor import CursorCodec, CursorError
from api.errors import BadInput, TimeBudgetExceeded, Unavailable
from api.lake import Catalog, DateData, LakeReader, NotServed, Run, TableData
from api.settings import ApiSettings
from schemas.base import Table


@dataclass
class Context:
    caller: Caller
    catalog: Catalog  # pinned when the request started: one answer, one set of runs
    reader: LakeReader
    settings: ApiSettings
    codec: CursorCodec
    deadline: float  # time.monotonic() after which the request is abandoned
    request: Any = None
    response: Any = None
    started: float = field(default_factory=time.monotonic)
    # The answer read the ledger's runs (not only the served data): cached by ledger version.
    reads_ledger: bool = False

    # -- time budget ---------------------------------------------------------------------------
    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise TimeBudgetExceeded(f"the request used up its time budget of {self.settings.limits.time_budget_ms} ms")

    async def _within_budget(self, awaitable: Any) -> Any:
        remaining = self.remaining()
        if remaining <= 0:
            self.check_time()
        try:
            return await asyncio.wait_for(asyncio.shield(awaitable), timeout=remaining)
        except TimeoutError:
            raise TimeBudgetExceeded(
                f"the request used up its time budget of {self.settings.limits.time_budget_ms} ms "
                "(the data is still being loaded: retry shortly)"
            ) from None

    # -- data ----------------------------------------------------------------------------------
    def run(self, as_of: dt.date | None) -> Run:
        try:
            return self.catalog.run_for(as_of)
        except NotServed as exc:
            raise Unavailable(str(exc)) from None

    def ledger_runs(self) -> tuple[Run, ...]:
        """Every run in the ledger, newest start first."""
        self.reads_ledger = True
        return self.catalog.runs

    def run_by_id(self, run_id: str) -> Run | None:
        self.reads_ledger = True
        return self.catalog.run_by_id(run_id)

    async def date(self, as_of: dt.date | None) -> DateData:
        return await self.date_for(self.run(as_of))

    async def date_for(self, run: Run) -> DateData:
        future = self.catalog.loaded.get(run.key) or self.reader.date_data(run)
        if not future.done():
            await self._within_budget(asyncio.wrap_future(future))
        data: DateData = self._result(future)
        return data

    async def table(self, as_of: dt.date | None, contract: Table, order: tuple[str, ...]) -> TableData | None:
        return await self.run_table(self.run(as_of), contract, order)

    async def run_table(self, run: Run, contract: Table, order: tuple[str, ...]) -> TableData | None:
        data = await self.date_for(run)
        future = data.table(contract, order)
        if not future.done():
            await self._within_budget(asyncio.wrap_future(future))
        table: TableData | None = self._result(future)
        return table

    @staticmethod
    def _result(future: Any) -> Any:
        try:
            return future.result()
        except Exception as exc:
            raise Unavailable(f"the business date's data could not be read ({type(exc).__name__})") from exc

    # -- paging --------------------------------------------------------------------------------
    def page_size(self, first: int | None) -> int:
        limits = self.settings.limits
        if first is None:
            return limits.default_page_size
        if first < 0:
            raise BadInput("`first` must not be negative")
        if first > limits.max_page_size:
            raise BadInput(f"`first` must be at most {limits.max_page_size}", maxPageSize=limits.max_page_size)
        return first

    def after_key(self, kind: str, after: str | None) -> str | None:
        if after is None:
            return None
        try:
            key = self.codec.decode(kind, after)
        except CursorError as exc:
            raise BadInput(f"`after`: {exc}") from None
        if len(key) != 1 or not isinstance(key[0], str):
            raise BadInput("`after`: invalid cursor")
        return key[0]

    def cursor(self, kind: str, key: str) -> str:
        return self.codec.encode(kind, (key,))
