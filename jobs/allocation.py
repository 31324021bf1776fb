"""Agency allocation (委外分案), recall and rotation, and the agency scorecard with fees.

DOMAIN.md section 4, seed part 4 sections 3 and 5, docs/collections.md (with a worked example).
Everything is set-based: the allocation works on classes of interchangeable cases, computes
integer quotas per (class, agency) with window functions, spreads each agency's quota evenly
over the class's cases sorted by DPD band and amount, and matches case rank to slot rank with
an equi-join. There is no loop over cases; the only Python loops are over allocation passes and
balancing iterations, a handful of each, fixed by configuration.

State: agency_placements of the previous run (ctx.previous) is the only memory. It holds the
ACTIVE placements, and the ended ones within the retention window, which serve rotation
(agencies that held the loan recently are excluded), performance weights and monthly fees.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import reduce

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.sections.collections import AllocationConfig, FeeBand
from jobs.spark import local_frame
from schemas.base import Column as ContractColumn
from schemas.base import Table
from schemas.collections import AGENCY_PLACEMENTS, AGENCY_SCORECARD

Transform = Callable[[DataFrame], DataFrame]
MONEY = "decimal(18,2)"
RATE = "decimal(9,6)"
WEIGHT_UNITS = 1_000_000
# Ended placements whose recoveries count as cures on the scorecard.
CURE_REASONS = ("CURED", "SETTLED")


def contract_columns(table: Table) -> list[Column]:
    """The table's columns in order, cast to the contract's types. Arrays whose elements may not
    be null are compacted first (a no-op on their values) so that the cast is allowed."""

    def conform(column: ContractColumn) -> Column:
        value = F.col(column.name)
        if isinstance(column.dtype, T.ArrayType) and not column.dtype.containsNull:
            value = F.array_compact(value)
        return value.cast(column.dtype).alias(column.name)

    return [conform(c) for c in table.columns]


# --------------------------------------------------------------------------------------------
# Reference values: regions served, fee bands and rates, retention


def agency_pool(agencies: DataFrame) -> DataFrame:
    """agency_id, name, regions (array, from the comma-separated region_codes), capacity, status."""
    regions = F.array_sort(
        F.array_distinct(F.filter(F.transform(F.split("region_codes", ","), lambda r: F.trim(r)), lambda r: r != ""))
    )
    return agencies.select("agency_id", "name", regions.alias("regions"), "capacity", "status")


def fee_band(bands: tuple[FeeBand, ...]) -> Callable[[Column], Column]:
    """Band name for a DPD: the band with the highest min_dpd not above it."""

    def band(dpd: Column) -> Column:
        expression = F.when(F.lit(False), F.lit(None))
        for b in sorted(bands, key=lambda b: -b.min_dpd):
            expression = expression.when(dpd >= b.min_dpd, F.lit(b.name))
        return expression.cast("string")

    return band


def band_index(bands: tuple[FeeBand, ...]) -> Callable[[Column], Column]:
    def index(dpd: Column) -> Column:
        expression = F.when(F.lit(False), F.lit(None))
        for i, b in sorted(enumerate(bands), key=lambda ib: -ib[1].min_dpd):
            expression = expression.when(dpd >= b.min_dpd, F.lit(i))
        return expression.cast("int")

    return index


def fee_rate(config: AllocationConfig) -> Column:
    """Commission rate of a row with agency_id and fee_band: the agency's own rate, else the band's."""
    own = [
        (f"{agency}|{band}", rate)
        for agency, rates in sorted(config.agency_fee_rates.items())
        for band, rate in sorted(rates.items())
    ]
    default = F.create_map(*[x for b in config.fee_bands for x in (F.lit(b.name), F.lit(b.rate).cast(RATE))])
    key = F.concat_ws("|", "agency_id", "fee_band")
    if not own:
        return F.try_element_at(default, F.col("fee_band"))
    specific = F.create_map(*[x for k, rate in own for x in (F.lit(k), F.lit(rate).cast(RATE))])
    return F.coalesce(F.try_element_at(specific, key), F.try_element_at(default, F.col("fee_band")))


def month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def previous_month_start(day: dt.date) -> dt.date:
    return month_start(month_start(day) - dt.timedelta(days=1))


def retention_cutoff(as_of: dt.date, config: AllocationConfig) -> dt.date:
    """Ended placements are kept while they ended on or after this date."""
    return min(
        as_of - dt.timedelta(days=config.rotation_lookback_days),
        as_of - dt.timedelta(days=config.performance_window_days),
        previous_month_start(as_of),
    )


def placement_amount(config: AllocationConfig) -> Column:
    if config.placement_amount_basis == "OVERDUE":
        amount = F.col("overdue_principal") + F.col("overdue_interest")
    else:
        amount = F.col("outstanding_principal") + F.col("overdue_interest")
    return amount.cast(MONEY)


# --------------------------------------------------------------------------------------------
# Recoveries and performance


def credits(as_of: dt.date, placements: DataFrame, repayments: DataFrame) -> DataFrame:
    """Repayments credited to placements: value date after placed_date (the case was handed over
    that night) up to ended_date, or the date while active. Reversals credit negatively.

    Columns: placement_id, agency_id, fee_band, value_date, amount.
    """
    held = placements.where(F.col("placement_id").isNotNull()).select(
        "placement_id",
        "loan_id",
        "agency_id",
        "fee_band",
        "placed_date",
        F.coalesce("ended_date", F.lit(as_of)).alias("_until"),
    )
    return (
        repayments.where(F.col("value_date") <= F.lit(as_of))
        .select("loan_id", "value_date", "amount")
        .join(held, "loan_id")
        .where((F.col("value_date") > F.col("placed_date")) & (F.col("value_date") <= F.col("_until")))
        .select("placement_id", "agency_id", "fee_band", "value_date", "amount")
    )


def agency_performance(
    as_of: dt.date, config: AllocationConfig, placements: DataFrame, credited: DataFrame
) -> DataFrame:
    """Per agency over the performance window: placements held, recovery rate, challenger flag.

    Columns: agency_id, window_cases, rate (double, null without amount), challenger.
    """
    start = as_of - dt.timedelta(days=config.performance_window_days)
    held = (
        placements.where(
            F.col("placement_id").isNotNull()
            & (F.col("placed_date") <= F.lit(as_of))
            & (F.coalesce("ended_date", F.lit(as_of)) >= F.lit(start))
        )
        .groupBy("agency_id")
        .agg(F.count(F.lit(1)).alias("window_cases"), F.sum("amount_at_placement").alias("_amount"))
    )
    recovered = (
        credited.where(F.col("value_date") >= F.lit(start))
        .groupBy("agency_id")
        .agg(F.sum("amount").alias("_recovered"))
    )
    rate = F.when(F.col("_amount") > 0, (F.coalesce("_recovered", F.lit(0)) / F.col("_amount")).cast("double"))
    return held.join(recovered, "agency_id", "left").select(
        "agency_id",
        "window_cases",
        rate.alias("rate"),
        (F.col("window_cases") < config.challenger_min_cases).alias("challenger"),
    )


# --------------------------------------------------------------------------------------------
# Allocation: quotas on the (class, agency) matrix, then slots matched to ranked cases


@dataclass(frozen=True)
class ClassDemand:
    """Cases that are interchangeable for allocation: same region, same excluded agencies."""

    key: str
    region: str
    excluded: tuple[str, ...]
    cases: int


@dataclass(frozen=True)
class Candidate:
    """An ACTIVE agency as the allocation sees it."""

    agency_id: str
    regions: tuple[str, ...]
    free: int
    rate: float | None
    challenger: bool


def class_weights(agencies: list[Candidate], share: float, min_rate: float) -> dict[str, int]:
    """Integer weights (units of 1e-6) of the agencies eligible for one class.

    Challengers share `share` equally; champions share the rest in proportion to their recovery
    rate, floored at `min_rate`. A class with only one kind gives that kind everything. Every
    weight is at least one unit, so that water-filling has no zero divisor.
    """
    challengers = [a for a in agencies if a.challenger]
    champions = [a for a in agencies if not a.challenger]
    group = 1.0 if not champions else 0.0 if not challengers else share
    rates = {a.agency_id: max(a.rate or 0.0, min_rate) for a in champions}
    total = sum(rates[a] for a in sorted(rates))
    weights = {a.agency_id: group / len(challengers) for a in challengers}
    weights.update({a: (1 - group) * r / total for a, r in rates.items()})
    return {a: max(1, round(w * WEIGHT_UNITS)) for a, w in weights.items()}


def largest_remainder(total: int, shares: dict[str, float]) -> dict[str, int]:
    """Integers summing to `total` in proportion to `shares` (ties to the smaller key)."""
    whole = sum(shares[k] for k in sorted(shares))
    raw = {k: total * v / whole for k, v in shares.items()}
    out = {k: int(v) for k, v in raw.items()}
    left = total - sum(out.values())
    for k in sorted(raw, key=lambda k: (-(raw[k] - out[k]), k))[: max(left, 0)]:
        out[k] += 1
    return out


def water_fill(cases: int, caps: dict[str, int], weights: dict[str, int]) -> dict[str, int]:
    """Split min(cases, sum caps) by weight with caps, in integers (exact arithmetic).

    q = min(cap, lambda * w) with sum q = the total: agencies saturate in the order of cap / w;
    the rest share what is left by weight; the largest remainders (then the larger weight, then
    the smaller agency id) get the odd cases. No quota ever exceeds its cap.
    """
    total = min(cases, sum(caps.values()))
    order = sorted(caps, key=lambda a: (Fraction(caps[a], weights[a]), a))
    saturated: set[str] = set()
    used, weight_left = 0, sum(weights.values())
    for a in order:
        if caps[a] * weight_left <= (total - used) * weights[a]:
            saturated.add(a)
            used += caps[a]
            weight_left -= weights[a]
        else:
            break
    level = Fraction(total - used, weight_left) if weight_left else Fraction(0)
    exact = {a: Fraction(caps[a]) if a in saturated else level * weights[a] for a in caps}
    quota = {a: int(v) for a, v in exact.items()}
    left = total - sum(quota.values())
    open_ = [a for a in caps if a not in saturated and quota[a] < caps[a]]
    for a in sorted(open_, key=lambda a: (-(exact[a] - quota[a]), -weights[a], a))[:left]:
        quota[a] += 1
    return quota


def split_capacity(
    demands: dict[str, int], eligible: dict[str, list[str]], free: dict[str, int], iterations: int
) -> dict[tuple[str, str], int]:
    """Each agency's free capacity shared over the classes it may serve: (class, agency) -> cap.

    Start from each class's cases spread over its agencies in proportion to their capacity;
    a few rounds of iterative proportional fitting (agencies scaled down to their capacity,
    classes back up to their cases) move an agency's capacity towards the classes that have no
    other agency to turn to. The agency's whole free capacity is then apportioned in those
    proportions, so it is never exceeded and none of it is withheld.
    """
    x: dict[tuple[str, str], float] = {}
    for c, agencies in eligible.items():
        pool = sum(free[a] for a in agencies)
        for a in agencies:
            x[(c, a)] = demands[c] * free[a] / pool
    by_agency: dict[str, list[str]] = {}
    for c, a in sorted(x):
        by_agency.setdefault(a, []).append(c)
    for _ in range(iterations):
        for a, classes in by_agency.items():
            load = sum(x[(c, a)] for c in classes)
            if load > free[a]:
                for c in classes:
                    x[(c, a)] *= free[a] / load
        for c, agencies in eligible.items():
            got = sum(x[(c, a)] for a in agencies)
            for a in agencies:
                x[(c, a)] *= demands[c] / got
    caps: dict[tuple[str, str], int] = {}
    for a, classes in by_agency.items():
        for c, cap in largest_remainder(free[a], {c: x[(c, a)] for c in classes}).items():
            caps[(c, a)] = cap
    return caps


def plan_quotas(
    demands: list[ClassDemand], candidates: list[Candidate], config: AllocationConfig
) -> dict[tuple[str, str], int]:
    """How many cases of each class each agency takes: (class key, agency id) -> quota.

    Per pass: eligible pairs (the agency serves the region, is not excluded, has capacity left),
    the capacity split over classes, then per class the weighted water-filling. A further pass
    offers what is left of the capacity to what is left of the cases. The matrix is classes x
    agencies, whatever the number of cases.
    """
    remaining = {d.key: d.cases for d in demands}
    free = {a.agency_id: a.free for a in candidates}
    by_id = {a.agency_id: a for a in candidates}
    quotas: dict[tuple[str, str], int] = {}
    for _ in range(config.allocation_passes):
        eligible = {
            d.key: [
                a.agency_id
                for a in sorted(candidates, key=lambda a: a.agency_id)
                if d.region in a.regions and a.agency_id not in d.excluded and free[a.agency_id] > 0
            ]
            for d in sorted(demands, key=lambda d: d.key)
            if remaining[d.key] > 0
        }
        eligible = {c: agencies for c, agencies in eligible.items() if agencies}
        if not eligible:
            break
        caps = split_capacity(remaining, eligible, free, config.balance_iterations)
        for c, agencies in eligible.items():
            weights = class_weights([by_id[a] for a in agencies], config.challenger_share, config.min_weight_rate)
            got = water_fill(remaining[c], {a: caps[(c, a)] for a in agencies}, weights)
            for a, q in got.items():
                if q:
                    quotas[(c, a)] = quotas.get((c, a), 0) + q
                    free[a] -= q
                    remaining[c] -= q
    return quotas


def allocate(as_of: dt.date, agencies: DataFrame, config: AllocationConfig) -> Transform:
    """Place the cases of the input with agencies, deterministically and within capacity.

    Input (one row per case): loan_id, region_code, amount, _band (DPD band index),
    excluded_agencies (array), and optionally _held_reason: a case with one is not placed and
    keeps it as its unplaced_reason. `agencies`: the ACTIVE agencies with agency_id, regions
    (array), free (capacity left), rate (recovery rate in the window, null if none), challenger.
    Output: the input plus agency_id, challenger (null when unplaced) and unplaced_reason.

    The cases are counted per class (region, excluded agencies) and the quotas planned on that
    small matrix (`plan_quotas`, one small collect). In Spark, each agency's quota becomes slots
    at (j + 1/2) / q, spread evenly over the class's cases ranked by DPD band and amount, and
    the k-th case takes the k-th slot (row_number on both sides, then an equi-join).
    """

    def transform(demand: DataFrame) -> DataFrame:
        spark = demand.sparkSession
        held = F.col("_held_reason") if "_held_reason" in demand.columns else F.lit(None).cast("string")
        # Held cases and cases without a region get no class: no slot can match them.
        cases = demand.withColumn("_held", held).withColumn(
            "_class",
            F.when(
                F.col("_held").isNull() & F.col("region_code").isNotNull(),
                F.concat_ws("|", F.col("region_code"), F.array_join("excluded_agencies", ",")),
            ),
        )
        counts = [
            ClassDemand(r["_class"], r["region_code"], tuple(r["excluded_agencies"]), int(r["_n"]))
            for r in cases.where(F.col("_class").isNotNull())
            .groupBy("_class", "region_code", "excluded_agencies")
            .agg(F.count(F.lit(1)).alias("_n"))
            .collect()
        ]
        pool = [
            Candidate(
                r["agency_id"], tuple(r["regions"] or ()), max(int(r["free"] or 0), 0), r["rate"], r["challenger"]
            )
            for r in agencies.select("agency_id", "regions", "free", "rate", "challenger").collect()
        ]
        quotas = plan_quotas(counts, pool, config)
        challenger = {a.agency_id: a.challenger for a in pool}
        slots = (
            local_frame(
                spark,
                [(c, a, q, challenger[a]) for (c, a), q in sorted(quotas.items())],
                "_class string, agency_id string, _q int, challenger boolean",
            )
            .withColumn("_j", F.explode(F.sequence(F.lit(0), F.col("_q") - 1)))
            # Slot j of an agency with q slots sits at (j + 1/2) / q: each agency's slots are
            # spread evenly over the ranked cases, so it gets its share of every band and size.
            .withColumn("_pos", (2 * F.col("_j") + 1) / (2 * F.col("_q")))
            .withColumn(
                "_k",
                F.row_number().over(Window.partitionBy("_class").orderBy("_pos", F.col("_q").desc(), "agency_id")),
            )
            .select("_class", "_k", "agency_id", "challenger")
        )
        ranked = cases.withColumn(
            "_k",
            F.row_number().over(
                Window.partitionBy("_class").orderBy(
                    "_band", F.col("amount").desc(), F.xxhash64("loan_id", F.lit(as_of.isoformat())), "loan_id"
                )
            ),
        )
        regions: dict[str, list[str]] = {}
        for a in sorted(pool, key=lambda a: a.agency_id):
            for region in a.regions:
                regions.setdefault(region, []).append(a.agency_id)
        serving = local_frame(spark, sorted(regions.items()), "region_code string, _serving array<string>")
        reason = (
            F.when(F.col("agency_id").isNotNull(), F.lit(None))
            .when(F.col("_held").isNotNull(), F.col("_held"))
            .when(F.col("region_code").isNull(), F.lit("NO_REGION"))
            .when(F.col("_serving").isNull(), F.lit("NO_AGENCY_FOR_REGION"))
            .when(F.size(F.array_except("_serving", "excluded_agencies")) == 0, F.lit("ROTATION_EXHAUSTED"))
            .otherwise(F.lit("NO_CAPACITY"))
        )
        return (
            ranked.join(F.broadcast(slots), ["_class", "_k"], "left")
            .join(F.broadcast(serving), "region_code", "left")
            .withColumn("unplaced_reason", reason.cast("string"))
            .drop("_class", "_k", "_serving", "_held", "_held_reason")
        )

    return transform


# --------------------------------------------------------------------------------------------
# Recall, rotation and the placements of the date


def recall_reason(as_of: dt.date, config: AllocationConfig) -> Column:
    """Why an ACTIVE placement ends today (null: it continues). Needs _on_book, _loan_status,
    _signals, _mode, _dpd, _agency_status and expires_date; the first that applies wins."""
    severe = F.arrays_overlap(
        F.coalesce(F.col("_signals"), F.array().cast("array<string>")),
        F.array(*[F.lit(s) for s in config.severe_signals]).cast("array<string>"),
    )
    return (
        F.when(
            F.col("_on_book").isNull(),
            F.when(F.col("_loan_status") == "SETTLED", F.lit("SETTLED"))
            .when(F.col("_loan_status") == "WRITTEN_OFF", F.lit("WRITTEN_OFF"))
            .otherwise(F.lit("NOT_ON_BOOK")),
        )
        .when(severe, F.lit("SEVERE_SIGNAL"))
        .when(F.col("_mode") == "LEGAL", F.lit("LEGAL"))
        .when(F.col("_dpd") == 0, F.lit("CURED"))
        .when(F.col("_agency_status").isNull() | (F.col("_agency_status") == "TERMINATED"), F.lit("AGENCY_TERMINATED"))
        .when(F.col("_agency_status") == "SUSPENDED", F.lit("AGENCY_SUSPENDED"))
        .when(F.lit(as_of) >= F.col("expires_date"), F.lit("EXPIRED"))
    )


def _ended(as_of: dt.date, frame: DataFrame) -> DataFrame:
    return frame.withColumns(
        {
            "status": F.when(F.col("_reason") == "EXPIRED", F.lit("EXPIRED")).otherwise(F.lit("RECALLED")),
            "ended_date": F.lit(as_of),
            "recall_reason": F.col("_reason"),
        }
    )


def _empty_placements(like: DataFrame) -> DataFrame:
    return local_frame(like.sparkSession, [], AGENCY_PLACEMENTS.schema)


def build_placements(
    as_of: dt.date,
    config: AllocationConfig,
    cases: DataFrame,
    book: DataFrame,
    agencies: DataFrame,
    repayments: DataFrame,
    loans: DataFrame,
    previous: DataFrame | None,
) -> DataFrame:
    """agency_placements rows of the date.

    `cases`: today's collection cases (snapshot columns, mode, signal_types); `book`: loan_id and
    dpd of every loan on the book; `agencies`, `repayments`, `loans`: landing tables; `previous`:
    the previous run's agency_placements rows (None on the first run).

    1. The previous ACTIVE placements end today for the first recall reason that applies
       (recall_reason); the survivors continue, except the newest beyond a reduced capacity.
    2. Ended placements are carried while they ended on or after the retention cutoff.
    3. Outsourced cases without a continuing placement are allocated (`allocate`), excluding the
       agencies that held the loan within the rotation look-back; the rest are UNPLACED.
    """
    spark_like = cases
    prev = (previous if previous is not None else _empty_placements(spark_like)).where(F.col("status") != "UNPLACED")
    pool = agency_pool(agencies)
    credited = credits(as_of, prev, repayments)
    performance = agency_performance(as_of, config, prev, credited)

    # 1. Recalls of yesterday's active placements, then the newest beyond a reduced capacity.
    checked = (
        prev.where(F.col("status") == "ACTIVE")
        .join(book.select("loan_id", F.col("dpd").alias("_dpd"), F.lit(True).alias("_on_book")), "loan_id", "left")
        .join(
            cases.select("loan_id", F.col("mode").alias("_mode"), F.col("signal_types").alias("_signals")),
            "loan_id",
            "left",
        )
        .join(loans.select("loan_id", F.col("status").alias("_loan_status")), "loan_id", "left")
        .join(
            F.broadcast(
                pool.select("agency_id", F.col("status").alias("_agency_status"), F.col("capacity").alias("_capacity"))
            ),
            "agency_id",
            "left",
        )
        .withColumn("_reason", recall_reason(as_of, config))
    )
    kept_oldest_first = Window.partitionBy("agency_id", F.col("_reason").isNull()).orderBy(
        "placed_date", "placement_id"
    )
    over_capacity = F.col("_reason").isNull() & (F.row_number().over(kept_oldest_first) > F.col("_capacity"))
    decided = checked.withColumn(
        "_reason", F.when(over_capacity, F.lit("CAPACITY_REDUCED")).otherwise(F.col("_reason"))
    )
    ended_today = _ended(as_of, decided.where(F.col("_reason").isNotNull()))
    continuing = decided.where(F.col("_reason").isNull())

    # 2. Ended placements kept for look-back, weights and fees.
    cutoff = retention_cutoff(as_of, config)
    carried = prev.where(F.col("status").isin("RECALLED", "EXPIRED") & (F.col("ended_date") >= F.lit(cutoff)))

    # 3. New placements: outsourced cases without a continuing placement. Cases with a severe
    #    signal go through as held (never placed) so that every case has one row.
    lookback = as_of - dt.timedelta(days=config.rotation_lookback_days)
    recent = (
        ended_today.select("loan_id", "agency_id", "ended_date")
        .unionByName(carried.select("loan_id", "agency_id", "ended_date"))
        .where(F.col("ended_date") >= F.lit(lookback))
        .groupBy("loan_id")
        .agg(F.array_sort(F.collect_set("agency_id")).alias("_recent"))
    )
    severe = F.arrays_overlap(
        F.col("signal_types"), F.array(*[F.lit(s) for s in config.severe_signals]).cast("array<string>")
    )
    needing = (
        cases.where(F.col("mode") == "OUTSOURCED")
        .join(continuing.select("loan_id"), "loan_id", "left_anti")
        .join(recent, "loan_id", "left")
        .withColumns(
            {
                "excluded_agencies": F.coalesce("_recent", F.array().cast("array<string>")),
                "amount": placement_amount(config),
                "_band": band_index(config.fee_bands)(F.col("dpd")),
                "_held_reason": F.when(severe, F.lit("SEVERE_SIGNAL")),
            }
        )
        .drop("_recent")
    )
    held = continuing.groupBy("agency_id").agg(F.count(F.lit(1)).alias("_held"))
    active_agencies = (
        pool.where(F.col("status") == "ACTIVE")
        .join(held, "agency_id", "left")
        .join(performance.select("agency_id", "rate", "challenger"), "agency_id", "left")
        .select(
            "agency_id",
            "regions",
            F.greatest(F.col("capacity") - F.coalesce("_held", F.lit(0)), F.lit(0)).alias("free"),
            "rate",
            F.coalesce("challenger", F.lit(True)).alias("challenger"),
        )
    )
    allocated = needing.transform(allocate(as_of, active_agencies, config))
    placed = F.col("agency_id").isNotNull()
    new_rows = allocated.withColumns(
        {
            "placement_id": F.when(placed, F.concat(F.lit(f"P{as_of:%Y%m%d}-"), F.col("loan_id"))),
            "status": F.when(placed, F.lit("ACTIVE")).otherwise(F.lit("UNPLACED")),
            "placed_date": F.when(placed, F.lit(as_of)),
            "expires_date": F.when(placed, F.lit(as_of + dt.timedelta(days=config.placement_days))),
            "ended_date": F.lit(None).cast("date"),
            "recall_reason": F.lit(None).cast("string"),
            "amount_at_placement": F.col("amount"),
            "dpd_at_placement": F.col("dpd"),
            "fee_band": fee_band(config.fee_bands)(F.col("dpd")),
        }
    )

    columns = [c for c in AGENCY_PLACEMENTS.names if c not in ("as_of_date", "recovered_amount")]
    rows = reduce(
        DataFrame.unionByName,
        [frame.select(*columns) for frame in (continuing, ended_today, carried, new_rows)],
    )
    recovered = credited.groupBy("placement_id").agg(F.sum("amount").alias("_recovered"))
    return (
        rows.join(recovered, "placement_id", "left")
        .withColumn("as_of_date", F.lit(as_of))
        .withColumn("recovered_amount", F.coalesce("_recovered", F.lit(0)).cast(MONEY))
        .select(*contract_columns(AGENCY_PLACEMENTS))
    )


# --------------------------------------------------------------------------------------------
# Scorecard and fees


def _ratio(numerator: Column, denominator: Column) -> Column:
    return F.when(denominator > 0, F.least(numerator / denominator, F.lit(999)).cast(RATE))


def agency_scorecard(
    as_of: dt.date,
    config: AllocationConfig,
    placements: DataFrame,
    agencies: DataFrame,
    repayments: DataFrame,
    actions: DataFrame,
) -> DataFrame:
    """agency_scorecard rows of the date: every agency, for the current month to date and the
    previous (settled) month. Fees: repayments credited in the month x the agency's rate for the
    placement's fee band (委外費用結算)."""
    spark = placements.sparkSession
    current = month_start(as_of)
    previous = previous_month_start(as_of)
    months = local_frame(
        spark,
        [(previous, current - dt.timedelta(days=1), True), (current, as_of, False)],
        "month date, period_end date, settled boolean",
    )
    rows = placements.where(F.col("placement_id").isNotNull())
    credited = credits(as_of, rows, repayments).withColumn("_rate", fee_rate(config))
    until = F.coalesce("ended_date", F.lit(as_of))
    in_month = F.col("placed_date").between(F.col("month"), F.col("period_end"))
    per_month = rows.crossJoin(F.broadcast(months)).where(
        (F.col("placed_date") <= F.col("period_end")) & (until >= F.col("month"))
    )
    held = per_month.groupBy("month", "agency_id").agg(
        F.count(F.lit(1)).alias("cases_held"),
        F.sum("amount_at_placement").alias("amount_held"),
        F.sum(in_month.cast("int")).alias("cases_placed"),
        F.sum(F.when(in_month, F.col("amount_at_placement"))).alias("amount_placed"),
        F.sum(
            (
                F.col("ended_date").between(F.col("month"), F.col("period_end"))
                & F.col("recall_reason").isin(*CURE_REASONS)
            ).cast("int")
        ).alias("cured_cases"),
    )
    recovered = (
        credited.crossJoin(F.broadcast(months))
        .where(F.col("value_date").between(F.col("month"), F.col("period_end")))
        .groupBy("month", "agency_id")
        .agg(F.sum("amount").alias("recovered_amount"), F.sum(F.col("amount") * F.col("_rate")).alias("fee_amount"))
    )
    acted = actions.where(F.col("agency_id").isNotNull()).select(
        "loan_id", "agency_id", F.to_date("action_time").alias("_day")
    )
    covered = (
        per_month.select(
            "month", "period_end", "placement_id", "loan_id", "agency_id", "placed_date", until.alias("_until")
        )
        .join(acted, ["loan_id", "agency_id"])
        .where(
            F.col("_day").between(F.col("month"), F.col("period_end"))
            & F.col("_day").between(F.col("placed_date"), F.col("_until"))
        )
        .groupBy("month", "agency_id")
        .agg(F.countDistinct("placement_id").alias("_covered"))
    )
    performance = agency_performance(as_of, config, rows, credited)
    ids = agencies.select("agency_id").unionByName(rows.select("agency_id")).distinct()
    zero = F.lit(0).cast(MONEY)
    card = (
        ids.crossJoin(F.broadcast(months))
        .join(F.broadcast(agencies.select("agency_id", F.col("status").alias("agency_status"))), "agency_id", "left")
        .join(held, ["month", "agency_id"], "left")
        .join(recovered, ["month", "agency_id"], "left")
        .join(covered, ["month", "agency_id"], "left")
        .join(performance, "agency_id", "left")
        .withColumns(
            {
                "cases_held": F.coalesce("cases_held", F.lit(0)).cast("long"),
                "cases_placed": F.coalesce("cases_placed", F.lit(0)).cast("long"),
                "cured_cases": F.coalesce("cured_cases", F.lit(0)).cast("long"),
                "amount_held": F.coalesce("amount_held", zero).cast(MONEY),
                "amount_placed": F.coalesce("amount_placed", zero).cast(MONEY),
                "recovered_amount": F.coalesce("recovered_amount", zero).cast(MONEY),
                "fee_amount": F.coalesce("fee_amount", zero).cast(MONEY),
                "challenger": F.coalesce("challenger", F.lit(True)),
                "window_recovery_rate": F.col("rate").cast(RATE),
            }
        )
        .withColumn("recovery_rate", _ratio(F.col("recovered_amount"), F.col("amount_held")))
        .withColumn("cure_rate", _ratio(F.col("cured_cases"), F.col("cases_held")))
        .withColumn("coverage_rate", _ratio(F.coalesce("_covered", F.lit(0)), F.col("cases_held")))
    )
    month = Window.partitionBy("month")
    overall = _ratio(F.sum("recovered_amount").over(month), F.sum("amount_held").over(month))
    best_first = Window.partitionBy("month").orderBy(F.col("recovery_rate").desc_nulls_last())
    judged = (F.col("cases_held") >= config.elimination_min_cases) & F.col("recovery_rate").isNotNull()
    reason = F.when(
        judged & (F.col("recovery_rate") < F.lit(config.elimination_floor_rate)), F.lit("BELOW_FLOOR_RATE")
    ).when(
        judged & (F.col("recovery_rate") < F.lit(config.elimination_relative_rate) * F.col("_overall")),
        F.lit("BELOW_RELATIVE_RATE"),
    )
    return (
        card.withColumn("_overall", overall)
        .withColumn("rank", F.when(F.col("recovery_rate").isNotNull(), F.rank().over(best_first)))
        .withColumn("elimination_reason", reason.cast("string"))
        .withColumn("flagged_for_elimination", F.col("elimination_reason").isNotNull())
        .withColumn("as_of_date", F.lit(as_of))
        .select(*contract_columns(AGENCY_SCORECARD))
    )


__all__ = [
    "agency_performance",
    "agency_pool",
    "agency_scorecard",
    "allocate",
    "build_placements",
    "credits",
    "fee_band",
    "fee_rate",
    "recall_reason",
    "retention_cutoff",
]
