"""The GraphQL schema: root query fields over the served runs of the lake.

Every field that reads a business date takes `asOf` (default: the latest served date) and reads
the tables of the one run serving that date. Row-level security comes from the caller's token
(`info.context.caller`), never from arguments: a branch filter only narrows within it.

    python -m api.schema            # print the SDL
    python -m api.schema --write    # rewrite api/schema.graphql (the committed export)
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.extensions.query_depth_limiter import IgnoreContext
from strawberry.permission import BasePermission

from api.collection import (
    ORDER as COLLECTION_ORDER,
)
from api.collection import (
    AgencyMonth,
    CollectionCase,
    CollectionCaseFilter,
    Placement,
    PlacementStatus,
)
from api.context import Context
from api.errors import BadInput, Forbidden, NotFound, PublicError
from api.fields import resolver
from api.inspection import ORDER as INSPECTION_ORDER
from api.inspection import InspectionTask, InspectionTaskFilter, SettledLoan
from api.lake import Run as LakeRun
from api.lake import TableData
from api.loans import Loan, LoanFilter, loan_connection, loan_on_date
from api.metrics import (
    ORDER as METRICS_ORDER,
)
from api.metrics import (
    ChannelScore,
    EarlyWarning,
    EarlyWarningFilter,
    KpiBreach,
    KpiMetric,
    MigrationRate,
    PeriodType,
    RollRate,
    VintagePoint,
)
from api.portfolio import GroupBy, PortfolioFilter, PortfolioRow, portfolio_rows
from api.quarantine import ORDER as QUARANTINE_ORDER
from api.quarantine import QuarantineFilter, QuarantineRecord
from api.relay import Connection, empty_connection, paginate
from api.rows import date_before, int_range, listed, select
from api.settings import ApiSettings
from schemas.base import Table
from schemas.collections import AGENCY_PLACEMENTS, AGENCY_SCORECARD, COLLECTION_CASES
from schemas.inspections import INSPECTION_TASKS, SETTLED_LOANS
from schemas.lake import QUARANTINE
from schemas.metrics import (
    CHANNEL_SCORECARD,
    EARLY_WARNINGS,
    KPI_BREACHES,
    MIGRATION_RATES,
    PORTFOLIO_METRICS,
    ROLL_RATES,
    VINTAGE,
)

log = logging.getLogger("postloan.api")
SDL_FILE = Path(__file__).resolve().parent / "schema.graphql"
Info = strawberry.Info[Context, None]
N = TypeVar("N")


class IsHeadquarters(BasePermission):
    """Bank-wide figures without a branch dimension (vintages, agencies, quarantine): HQ only."""

    message = "this field is for headquarters callers only"
    error_extensions = {"code": "FORBIDDEN"}  # noqa: RUF012 (strawberry reads a class attribute)

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return info.context.caller.role == "HQ"


# ------------------------------------------------------------------------------------------------
# Small types of the root


@strawberry.enum(description="State of a nightly run in the ledger.")
class RunStatus(Enum):
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


@strawberry.type(description="A lake table and the Delta version a run wrote.")
class TableVersion:
    name: str
    version: int


@strawberry.type(description="A nightly run (run_ledger), in its latest state.")
class Run:
    run_id: strawberry.ID
    as_of_date: dt.date
    status: RunStatus
    started_at: dt.datetime
    finished_at: dt.datetime | None
    previous_as_of_date: dt.date | None
    serving: bool = strawberry.field(description="This run is the one whose tables answer for its business date.")
    tables: list[TableVersion] = strawberry.field(description="Tables written by the run, at their Delta versions.")

    @classmethod
    def from_run(cls, run: LakeRun, serving: bool) -> Run:
        return cls(
            run_id=strawberry.ID(run.run_id),
            as_of_date=run.as_of_date,
            status=RunStatus(run.status),
            started_at=run.started_at,
            finished_at=run.finished_at,
            previous_as_of_date=run.previous_as_of_date,
            serving=serving,
            tables=[TableVersion(name=k, version=v) for k, v in sorted(run.table_versions.items())],
        )


@strawberry.type(description="Who the token says the caller is.")
class Viewer:
    subject: str
    role: str
    branch_id: str | None = strawberry.field(description="BRANCH callers: the subtree they are confined to.")
    pii: bool = strawberry.field(description="Personal data is shown unmasked.")


# ------------------------------------------------------------------------------------------------
# Agencies (their placements page inside the type)


@strawberry.type(description="A collection agency: its monthly scorecards and its placements on the date.")
class Agency:
    agency_id: strawberry.ID
    scorecards: list[AgencyMonth]
    _as_of: strawberry.Private[dt.date]

    @resolver("Placements with the agency on the date (active, ended in the window).")
    async def placements(
        self,
        info: Info,
        status: PlacementStatus | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[Placement]:
        equals = {"agency_id": str(self.agency_id), "status": _value(status)}
        return await PLACEMENTS.page(info.context, self._as_of, first, after, equals=equals)


# ------------------------------------------------------------------------------------------------
# Helpers


async def _table(
    ctx: Context, as_of: dt.date | None, contract: Table, order: dict[str, tuple[str, ...]]
) -> TableData | None:
    return await ctx.table(as_of, contract, order[contract.name])


@dataclass(frozen=True)
class Listing(Generic[N]):
    """A field over one lake table of a business date: the table, its key order (the keyset
    order of its pages), the cursor kind of its pages and the node made from a row."""

    contract: Table
    order: dict[str, tuple[str, ...]]
    make: Callable[[dict[str, Any]], N]
    cursor: str = ""

    async def rows(self, ctx: Context, as_of: dt.date | None, equals: dict[str, str | None] | None = None) -> list[N]:
        """Every row the caller may see that matches (none when the run did not write the table)."""
        data = await _table(ctx, as_of, self.contract, self.order)
        if data is None:
            return []
        return listed(ctx, data, select(ctx, data, equals=equals), self.make)

    async def page(
        self,
        ctx: Context,
        as_of: dt.date | None,
        first: int | None,
        after: str | None,
        branch_id: str | None = None,
        equals: dict[str, str | None] | None = None,
        extra: Sequence[Callable[[TableData], Any]] = (),
    ) -> Connection[N]:
        """A page of the rows the caller may see, in the branch's subtree and matching `equals`
        and `extra` (empty when the run did not write the table)."""
        data = await _table(ctx, as_of, self.contract, self.order)
        if data is None:
            return empty_connection()
        mask = select(ctx, data, branch_id=branch_id, equals=equals, extra=extra)
        return _page(ctx, self.cursor, data, mask, first, after, self.make)


def _value(choice: Enum | None) -> str | None:
    return None if choice is None else str(choice.value)


def _page(
    ctx: Context,
    kind: str,
    data: TableData,
    mask: Any,
    first: int | None,
    after: str | None,
    make: Callable[[dict[str, Any]], N],
) -> Connection[N]:
    def nodes(rows: Sequence[int]) -> list[N]:
        if not rows:
            return []
        return [make(r) for r in data.rows.take(np.asarray(rows, dtype=np.int64)).to_pylist()]

    return paginate(ctx, kind, data.keys, data.n, mask, first, after, nodes)


def _dpd_range(low: int | None, high: int | None) -> list[Any]:
    if low is None and high is None:
        return []
    if low is not None and high is not None and low > high:
        raise BadInput("minDpd must not exceed maxDpd")
    return [int_range("dpd", low, high)]


PLACEMENTS = Listing(AGENCY_PLACEMENTS, COLLECTION_ORDER, Placement.from_lake, "placements")
MIGRATION_RATES_LIST = Listing(MIGRATION_RATES, METRICS_ORDER, MigrationRate.from_lake)
ROLL_RATES_LIST = Listing(ROLL_RATES, METRICS_ORDER, RollRate.from_lake)
VINTAGE_LIST = Listing(VINTAGE, METRICS_ORDER, VintagePoint.from_lake)
KPI_BREACHES_LIST = Listing(KPI_BREACHES, METRICS_ORDER, KpiBreach.from_lake)
CHANNEL_SCORECARD_LIST = Listing(CHANNEL_SCORECARD, METRICS_ORDER, ChannelScore.from_lake)
EARLY_WARNINGS_PAGES = Listing(EARLY_WARNINGS, METRICS_ORDER, EarlyWarning.from_lake, "earlyWarnings")
INSPECTION_TASKS_PAGES = Listing(INSPECTION_TASKS, INSPECTION_ORDER, InspectionTask.from_lake, "inspectionTasks")
SETTLED_LOANS_PAGES = Listing(SETTLED_LOANS, INSPECTION_ORDER, SettledLoan.from_lake, "settledLoans")
COLLECTION_CASES_PAGES = Listing(COLLECTION_CASES, COLLECTION_ORDER, CollectionCase.from_lake, "collectionCases")
PORTFOLIO_METRICS_ORDER: dict[str, tuple[str, ...]] = {PORTFOLIO_METRICS.name: ("grouping", "group_key")}

# The tables read on first use, loaded with a new business date before it is served: the first
# work-list or metrics query after a swap otherwise waited up to 2 s for its table, and every
# request queued behind it on the client's connection (docs/api.md, "The swap window").
# Quarantine is left to first use: analysts ask for it rarely, and a bad night makes it large.
SERVED_ON_SWAP: tuple[tuple[Table, tuple[str, ...]], ...] = (
    *(
        (listing.contract, listing.order[listing.contract.name])
        for listing in (
            PLACEMENTS,
            MIGRATION_RATES_LIST,
            ROLL_RATES_LIST,
            VINTAGE_LIST,
            KPI_BREACHES_LIST,
            CHANNEL_SCORECARD_LIST,
            EARLY_WARNINGS_PAGES,
            INSPECTION_TASKS_PAGES,
            SETTLED_LOANS_PAGES,
            COLLECTION_CASES_PAGES,
        )
    ),
    (AGENCY_SCORECARD, COLLECTION_ORDER[AGENCY_SCORECARD.name]),
    (PORTFOLIO_METRICS, PORTFOLIO_METRICS_ORDER[PORTFOLIO_METRICS.name]),
)


# ------------------------------------------------------------------------------------------------
# The root


@strawberry.type(description="Post-loan portfolio queries over the nightly batch's Delta tables.")
class Query:
    @resolver("The caller, as the token describes it.")
    def viewer(self, info: Info) -> Viewer:
        caller = info.context.caller
        return Viewer(subject=caller.subject, role=caller.role, branch_id=caller.branch_id, pii=caller.pii)

    @resolver("Nightly runs, newest first (all states; only SUCCEEDED runs are served).")
    def runs(self, info: Info, last: int = 10) -> list[Run]:
        if last < 0:
            raise BadInput("`last` must not be negative")
        serving = {r.run_id for r in info.context.catalog.served.values()}
        last = min(last, info.context.settings.limits.max_list_size)
        return [Run.from_run(r, r.run_id in serving) for r in info.context.ledger_runs()[:last]]

    @resolver("Business dates that can be asked for with asOf, oldest first.")
    def business_dates(self, info: Info) -> list[dt.date]:
        return list(info.context.catalog.dates)

    @resolver("Portfolio figures grouped by a dimension (a branch caller: its subtree only).")
    async def portfolio(
        self, info: Info, group_by: GroupBy, as_of: dt.date | None = None, filter: PortfolioFilter | None = None
    ) -> list[PortfolioRow]:
        ctx = info.context
        data = await ctx.date(as_of)
        metrics = None
        if PORTFOLIO_METRICS.name in data.run.table_versions:
            metrics = await _table(ctx, as_of, PORTFOLIO_METRICS, PORTFOLIO_METRICS_ORDER)
        values = filter.values() if filter is not None else PortfolioFilter().values()
        return portfolio_rows(data, metrics, group_by.value, ctx.caller.scope, values)

    @resolver("Loans on the book, by loan id (a branch caller: its subtree only).")
    async def loans(
        self,
        info: Info,
        as_of: dt.date | None = None,
        filter: LoanFilter | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[Loan]:
        ctx = info.context
        data = await ctx.date(as_of)
        return loan_connection(ctx, data, filter, first, after)

    @resolver("One loan on a business date, with its history; null if not on the book or not yours.")
    async def loan(self, info: Info, loan_id: strawberry.ID, as_of: dt.date | None = None) -> Loan | None:
        ctx = info.context
        data = await ctx.date(as_of)
        return loan_on_date(ctx, data, str(loan_id))

    @resolver("Migration rates (遷徙率) per start class and group.")
    async def migration_rates(
        self,
        info: Info,
        as_of: dt.date | None = None,
        period_type: PeriodType = PeriodType.MONTH,
        group_by: GroupBy = GroupBy.HQ,
        key: str | None = None,
    ) -> list[MigrationRate]:
        equals = {"period_type": period_type.value, "grouping": group_by.value, "group_key": key}
        return await MIGRATION_RATES_LIST.rows(info.context, as_of, equals)

    @resolver("Roll rates between delinquency buckets since the previous month-end.")
    async def roll_rates(
        self, info: Info, as_of: dt.date | None = None, group_by: GroupBy = GroupBy.HQ, key: str | None = None
    ) -> list[RollRate]:
        equals = {"grouping": group_by.value, "group_key": key}
        return await ROLL_RATES_LIST.rows(info.context, as_of, equals)

    @resolver(
        "Vintage curves: share of each cohort's disbursed amount ever 30+/90+ DPD, by MOB.",
        permission_classes=[IsHeadquarters],
    )
    async def vintage(
        self, info: Info, as_of: dt.date | None = None, product_code: str | None = None
    ) -> list[VintagePoint]:
        equals = {"product_code": product_code}
        return await VINTAGE_LIST.rows(info.context, as_of, equals)

    @resolver("Groups breaching their KPI targets (a branch caller: groups in its subtree).")
    async def kpi_breaches(
        self,
        info: Info,
        as_of: dt.date | None = None,
        metric: KpiMetric | None = None,
        group_by: GroupBy | None = None,
    ) -> list[KpiBreach]:
        equals = {"metric": _value(metric), "grouping": _value(group_by)}
        return await KPI_BREACHES_LIST.rows(info.context, as_of, equals)

    @resolver("Cooperation channels scored and rated (a branch caller: channels it manages).")
    async def channel_scorecard(self, info: Info, as_of: dt.date | None = None) -> list[ChannelScore]:
        return await CHANNEL_SCORECARD_LIST.rows(info.context, as_of)

    @resolver("Early warnings raised since the previous run.")
    async def early_warnings(
        self,
        info: Info,
        as_of: dt.date | None = None,
        filter: EarlyWarningFilter | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[EarlyWarning]:
        f = filter or EarlyWarningFilter()
        return await EARLY_WARNINGS_PAGES.page(
            info.context,
            as_of,
            first,
            after,
            branch_id=f.branch_id,
            equals={"officer_id": f.officer_id, "warning_type": _value(f.warning_type), "severity": f.severity},
        )

    @resolver("Post-loan inspection tasks by due date (a branch caller: its subtree only).")
    async def inspection_tasks(
        self,
        info: Info,
        as_of: dt.date | None = None,
        filter: InspectionTaskFilter | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[InspectionTask]:
        f = filter or InspectionTaskFilter()
        return await INSPECTION_TASKS_PAGES.page(
            info.context,
            as_of,
            first,
            after,
            branch_id=f.branch_id,
            equals={
                "officer_id": f.officer_id,
                "task_type": f.task_type,
                "status": _value(f.status),
                "loan_id": f.loan_id,
            },
            extra=[date_before("due_date", f.due_on_or_before)] if f.due_on_or_before is not None else [],
        )

    @resolver("The monthly settled-loans list (結清名單) with collateral release status.")
    async def settled_loans(
        self,
        info: Info,
        as_of: dt.date | None = None,
        branch_id: str | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[SettledLoan]:
        return await SETTLED_LOANS_PAGES.page(
            info.context,
            as_of,
            first,
            after,
            branch_id=branch_id,
        )

    @resolver("The night's collection cases (a branch caller: its subtree only).")
    async def collection_cases(
        self,
        info: Info,
        as_of: dt.date | None = None,
        filter: CollectionCaseFilter | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[CollectionCase]:
        f = filter or CollectionCaseFilter()
        return await COLLECTION_CASES_PAGES.page(
            info.context,
            as_of,
            first,
            after,
            branch_id=f.branch_id,
            equals={
                "officer_id": f.officer_id,
                "mode": _value(f.mode),
                "stage": f.stage,
                "agency_id": f.agency_id,
                "owner_type": f.owner_type,
            },
            extra=_dpd_range(f.min_dpd, f.max_dpd),
        )

    @resolver(
        "Collection agencies with their monthly scorecards and placements.",
        permission_classes=[IsHeadquarters],
    )
    async def agencies(self, info: Info, as_of: dt.date | None = None, agency_id: str | None = None) -> list[Agency]:
        ctx = info.context
        run = ctx.run(as_of)
        scorecards = await _table(ctx, as_of, AGENCY_SCORECARD, COLLECTION_ORDER)
        placements = await _table(ctx, as_of, AGENCY_PLACEMENTS, COLLECTION_ORDER)
        months: dict[str, list[AgencyMonth]] = {}
        if scorecards is not None:
            mask = select(ctx, scorecards, equals={"agency_id": agency_id})
            for row in listed(ctx, scorecards, mask, lambda r: r):
                months.setdefault(row["agency_id"], []).append(AgencyMonth.from_lake(row))
        if placements is not None:
            ids = placements.rows.column("agency_id").unique().to_pylist()
            for agency in ids:
                if agency is not None and (agency_id is None or agency == agency_id):
                    months.setdefault(agency, [])
        return [Agency(agency_id=strawberry.ID(a), scorecards=months[a], _as_of=run.as_of_date) for a in sorted(months)]

    @resolver(
        "Landing rows a run quarantined (any SUCCEEDED run still in the ledger).",
        permission_classes=[IsHeadquarters],
    )
    async def quarantine(
        self,
        info: Info,
        run_id: strawberry.ID,
        filter: QuarantineFilter | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[QuarantineRecord]:
        ctx = info.context
        run = ctx.run_by_id(str(run_id))
        if run is None:
            raise NotFound(f"no run {run_id} in the ledger")
        if run.status != "SUCCEEDED":
            raise BadInput(f"run {run_id} is {run.status}: only SUCCEEDED runs are served")
        data = await ctx.run_table(run, QUARANTINE, QUARANTINE_ORDER)
        if data is None:
            return empty_connection()
        f = filter or QuarantineFilter()
        mask = select(
            ctx, data, equals={"run_id": str(run_id), "source_table": f.source_table, "reason_code": f.reason_code}
        )
        return _page(ctx, "quarantine", data, mask, first, after, QuarantineRecord.from_lake)


# ------------------------------------------------------------------------------------------------
# Schema and its extensions


def _ignore_introspection(context: IgnoreContext) -> bool:
    return context.field_name.startswith("__")


def should_mask(error: Any) -> bool:
    """Mask unexpected errors; keep the ones that tell the client what was wrong with its query
    (parse and validation errors have no original error, ours are PublicError)."""
    original = getattr(error, "original_error", None)
    if original is None:
        return False
    return not isinstance(original, PublicError | GraphQLError)


def extensions(settings: ApiSettings) -> list[Callable[[], SchemaExtension]]:
    """Limits and caches, as factories (a fresh extension per request).

    The depth and alias rules are built once and shared: the validation cache keys on the rule
    classes, and a limiter constructed per request would bring new classes (and miss) every time.
    """
    limits = settings.limits
    rules = [
        *QueryDepthLimiter(max_depth=limits.max_depth, should_ignore=_ignore_introspection).validation_rules,
        *MaxAliasesLimiter(max_alias_count=limits.max_aliases).validation_rules,
    ]
    return [
        lambda: MaxTokensLimiter(max_token_count=limits.max_tokens),
        lambda: ParserCache(maxsize=512),
        lambda: AddValidationRules(rules),
        lambda: ValidationCache(maxsize=512),
        lambda: MaskErrors(should_mask_error=should_mask, error_message="Internal server error"),
    ]


class PostloanSchema(strawberry.Schema):
    """Logs unexpected errors by type, path and frames only: messages may carry data, and personal
    data is never logged. Errors meant for the client (validation, PublicError) are not logged."""

    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        for error in errors:
            original = error.original_error
            if original is None or isinstance(original, PublicError | GraphQLError):
                continue
            frames = "".join(traceback.format_tb(original.__traceback__)[-4:])
            log.error("unexpected %s at %s\n%s", type(original).__name__, error.path, frames)


def build_schema(settings: ApiSettings | None = None) -> strawberry.Schema:
    return PostloanSchema(query=Query, extensions=extensions(settings or ApiSettings()))


def sdl() -> str:
    return build_schema().as_str().rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    text = sdl()
    if "--write" in args:
        SDL_FILE.write_text(text, encoding="utf-8")
        print(f"wrote {SDL_FILE}")
    else:
        sys.stdout.write(text)
    return 0


__all__ = ["Forbidden", "Query", "build_schema", "sdl"]

if __name__ == "__main__":
    sys.exit(main())
