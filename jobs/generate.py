"""A deterministic sample loan book, written as a landing zone (schemas/landing.py).

numpy draws the book CHUNK_LOANS loans at a time and pyarrow writes one file per chunk per table:
no Python loop runs per loan or per row, memory stays flat whatever the book size, and the same
seed, business date and loan count give byte-identical files. Behaviour comes from segments drawn
per borrower (on time, late then cured, partial payer, roll to default, prepayer, early settler,
restructured); every amount is integer cents until it is written as decimal(18,2).
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from schemas.base import Table
from schemas.landing import (
    AGENCIES,
    BORROWERS,
    BRANCHES,
    CHANNELS,
    COLLATERAL,
    COLLATERAL_TYPES,
    COLLECTION_ACTIONS,
    COMPLETED_INSPECTIONS,
    GUARANTORS,
    LANDING_TABLES,
    LOANS,
    OFFICERS,
    OVERRIDES,
    PRODUCTS,
    REPAYMENT_METHODS,
    REPAYMENTS,
    RISK_SIGNALS,
    SCHEDULE,
    SIGNAL_TYPES,
)

Arr = npt.NDArray[Any]

CHUNK_LOANS = 100_000
HISTORY_DAYS = 1095  # disbursements spread over the 36 months before the business date
EPOCH = dt.date(1970, 1, 1)

# Repayment methods and collateral types, as indexes into the contract's tuples.
EI, EP, BULLET, IO = range(4)
MORTGAGE_C, PLEDGE_C, GUARANTEE_C, CREDIT_C = range(4)
# Behaviour segments, ordered from worst to best so that a borrower's single draw `u` maps to a
# worse segment on a riskier product (loans of one borrower behave alike).
ROLL, RESTRUCTURE, PARTIAL, LATE, PREPAY, SETTLE, ON_TIME = range(7)
SEGMENT_NAMES = ("ROLL", "RESTRUCTURE", "PARTIAL", "LATE", "PREPAY", "SETTLE", "ON_TIME")
# Channel kinds: car dealers, online platforms, estate agents, business associations.
AUTO_DEALER, ONLINE, ESTATE_AGENT, ASSOCIATION = range(4)


@dataclass(frozen=True)
class _Product:
    code: str
    name: str
    category: str
    low_risk: bool
    refinance_designed: bool
    share: float
    tenors: tuple[int, ...]
    tenor_weights: tuple[float, ...]
    methods: tuple[float, float, float, float]  # weights in REPAYMENT_METHODS order
    collateral: tuple[float, float, float, float]  # weights in COLLATERAL_TYPES order
    autonomous: float  # share paid out to the borrower (自主支付)
    principal: tuple[int, int, int]  # min, max, rounding step, in yuan (log-uniform)
    rate: tuple[float, float]  # annual rate range
    risk: float  # multiplier on the bad-behaviour segments
    channel_kind: int
    channel_share: float


PRODUCT_BOOK: tuple[_Product, ...] = (
    _Product("MORTGAGE", "个人住房贷款", "MORTGAGE", True, False, 0.06, (120, 180, 240, 300),
             (0.3, 0.35, 0.25, 0.1), (0.75, 0.25, 0, 0), (1, 0, 0, 0), 0.0,
             (200_000, 2_500_000, 10_000), (0.030, 0.043), 0.3, ESTATE_AGENT, 0.3),
    _Product("CONSUMER", "个人消费贷款", "CONSUMER", False, False, 0.20, (12, 24, 36, 60),
             (0.35, 0.35, 0.22, 0.08), (0.8, 0.1, 0, 0.1), (0.1, 0.1, 0.25, 0.55), 0.4,
             (10_000, 500_000, 1_000), (0.032, 0.080), 1.0, ASSOCIATION, 0.1),
    _Product("CONSUMER_ONLINE", "个人网络信用贷款", "CONSUMER", False, False, 0.25, (6, 12, 24),
             (0.25, 0.5, 0.25), (0.7, 0, 0.1, 0.2), (0, 0, 0, 1), 0.9,
             (1_000, 200_000, 100), (0.035, 0.180), 2.0, ONLINE, 0.45),
    _Product("BUSINESS", "个人经营贷款", "BUSINESS", False, False, 0.17, (12, 24, 36),
             (0.45, 0.35, 0.2), (0.15, 0.2, 0.25, 0.4), (0.5, 0.15, 0.3, 0.05), 0.5,
             (50_000, 5_000_000, 10_000), (0.030, 0.065), 1.2, ASSOCIATION, 0.1),
    _Product("BUSINESS_RENEW", "无还本续贷", "BUSINESS", False, True, 0.05, (12, 24, 36),
             (0.5, 0.35, 0.15), (0, 0, 0.4, 0.6), (0.7, 0, 0.3, 0), 0.6,
             (100_000, 3_000_000, 10_000), (0.032, 0.060), 1.2, ASSOCIATION, 0.1),
    _Product("AUTO", "个人汽车贷款", "AUTO", False, False, 0.12, (12, 24, 36, 60),
             (0.15, 0.3, 0.4, 0.15), (0.9, 0.1, 0, 0), (0.8, 0, 0.2, 0), 0.0,
             (30_000, 500_000, 1_000), (0.035, 0.090), 0.8, AUTO_DEALER, 0.8),
    _Product("AGRI", "农户小额贷款", "AGRICULTURE", False, False, 0.15, (6, 12, 24),
             (0.3, 0.5, 0.2), (0.2, 0, 0.5, 0.3), (0, 0.1, 0.5, 0.4), 0.7,
             (10_000, 500_000, 1_000), (0.0345, 0.065), 1.3, ASSOCIATION, 0.1),
)
# Segment probabilities before the product's risk multiplier (ROLL..SETTLE; ON_TIME takes the rest).
SEGMENT_BASE = (0.025, 0.02, 0.03, 0.08, 0.05, 0.06)
RISKY_SEGMENTS = 4  # the first four scale with product risk

# Tier-1 branches (province), their tier-2 cities and the cities' ID-card area codes (first four digits).
TIER1 = (
    ("湖北", (("武汉", 4201), ("宜昌", 4205), ("襄阳", 4206))),
    ("湖南", (("长沙", 4301), ("株洲", 4302), ("岳阳", 4306))),
    ("河南", (("郑州", 4101), ("洛阳", 4103), ("南阳", 4113))),
    ("江西", (("南昌", 3601), ("九江", 3604), ("赣州", 3607))),
    ("安徽", (("合肥", 3401), ("芜湖", 3402), ("安庆", 3408))),
    ("四川", (("成都", 5101), ("绵阳", 5107), ("南充", 5113))),
)
SUB_SUFFIXES = ("城东支行", "城西支行", "开发区支行")
AGENCY_BOOK = (
    ("华信资产管理有限公司", (0, 1), "ACTIVE", 0.0080),
    ("安远信用管理有限公司", (1, 2), "ACTIVE", 0.0060),
    ("正和资产管理有限公司", (2, 3), "ACTIVE", 0.0070),
    ("恒达商务咨询有限公司", (3, 4), "ACTIVE", 0.0050),
    ("诚通信用服务有限公司", (4, 5), "ACTIVE", 0.0060),
    ("九州资产管理有限公司", (5, 0), "ACTIVE", 0.0040),
    ("天衡信用管理有限公司", (0, 2, 4), "SUSPENDED", 0.0040),
    ("嘉禾商务服务有限公司", (1, 3, 5), "TERMINATED", 0.0030),
)
SURNAMES = tuple("王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕苏卢蒋蔡贾丁魏")
GIVEN = tuple("伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂华玉萍红玲芬燕彬鹏辉建国志海波宇浩然欣怡婷雪梅晨阳涵思远嘉文俊峰凯瑞")
PHONE_PREFIXES = (130, 131, 132, 133, 135, 136, 137, 138, 139, 150, 151, 152, 155, 157, 158, 159, 166, 177,
                  180, 181, 182, 185, 186, 187, 188, 189, 198, 199)
CHANNEL_WORDS = ("众诚", "广汇", "华通", "远航", "鼎盛", "恒信", "新锐", "嘉和", "瑞丰", "宏图", "金桥", "盛世")
CHANNEL_FORMS = ("{city}{word}汽车销售服务有限公司", "{word}网络科技有限公司", "{city}{word}房地产经纪有限公司",
                 "{city}{word}商会")
OVERRIDE_REASONS = (
    "抵押物足值且借款人已恢复经营，经审批维持分类",
    "借款人涉诉，风险显著上升，审批下调分类",
    "保证人代偿意愿明确，审批调整分类",
    "借款人失联，审批下调分类",
    "贷款重组后按期还款，审批调整分类",
)
# GB 11643 check digit: weighted sum of the first 17 digits, mod 11.
ID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
ID_CHECK = tuple("10X98765432")
ID_SPACE_DAYS = 17_500  # birth dates over ~48 years; with 1000 sequence numbers: 17.5M distinct IDs
GUARANTOR_ID_OFFSET = 9_000_000


# --------------------------------------------------------------------------------------------
# Arrow helpers


def arrow_type(dtype: T.DataType) -> Any:
    """The Arrow type that Spark reads back as `dtype` (timestamps are UTC instants)."""
    if isinstance(dtype, T.DecimalType):
        return pa.decimal128(dtype.precision, dtype.scale)
    simple = {
        T.StringType: pa.string(), T.IntegerType: pa.int32(), T.LongType: pa.int64(),
        T.BooleanType: pa.bool_(), T.DateType: pa.date32(), T.DoubleType: pa.float64(),
        T.TimestampType: pa.timestamp("us", tz="UTC"),
    }
    for spark_type, arrow in simple.items():
        if isinstance(dtype, spark_type):
            return arrow
    raise TypeError(f"no Arrow type for {dtype.simpleString()}")


def arrow_schema(table: Table) -> Any:
    """All fields nullable: bad-row injection writes nulls into required columns on purpose."""
    return pa.schema([pa.field(c.name, arrow_type(c.dtype)) for c in table.columns])


def _decimal(unscaled: Arr, dtype: Any, valid: Arr | None = None) -> Any:
    """A decimal128 array from int64 unscaled values (cents for money), without float rounding."""
    values = np.ascontiguousarray(unscaled, dtype=np.int64)
    words = np.empty((len(values), 2), dtype=np.int64)
    words[:, 0] = values
    words[:, 1] = values >> 63  # sign extension to 128 bits, little-endian
    array = pa.Array.from_buffers(dtype, len(values), [None, pa.py_buffer(words.tobytes())])
    return array if valid is None else pc.if_else(pa.array(valid), array, pa.scalar(None, dtype))


def _money(cents: Arr, valid: Arr | None = None) -> Any:
    return _decimal(cents, pa.decimal128(18, 2), valid)


def _dates(days: Arr, valid: Arr | None = None) -> Any:
    values = pa.array(np.asarray(days, dtype=np.int32), type=pa.int32()).cast(pa.date32())
    return values if valid is None else pc.if_else(pa.array(valid), values, pa.scalar(None, pa.date32()))


def _ints(values: Arr, valid: Arr | None = None) -> Any:
    return pa.array(np.asarray(values, dtype=np.int32), type=pa.int32(), mask=None if valid is None else ~valid)


def _bools(values: Arr, valid: Arr | None = None) -> Any:
    return pa.array(np.asarray(values, dtype=bool), type=pa.bool_(), mask=None if valid is None else ~valid)


def _ids(prefix: str, numbers: Arr, width: int) -> Any:
    digits = pc.utf8_lpad(pc.cast(pa.array(np.asarray(numbers, dtype=np.int64)), pa.string()), width=width,
                          padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _pick(labels: Sequence[str] | Any, index: Arr, valid: Arr | None = None) -> Any:
    """labels[index] as a string array; null where not valid."""
    source = labels if isinstance(labels, pa.Array) else pa.array(list(labels), pa.string())
    taken = source.take(pa.array(np.asarray(index, dtype=np.int64)))
    return taken if valid is None else pc.if_else(pa.array(valid), taken, pa.scalar(None, pa.string()))


def _table(contract: Table, columns: dict[str, Any]) -> Any:
    return pa.Table.from_arrays([columns[c] for c in contract.names], schema=arrow_schema(contract))


# --------------------------------------------------------------------------------------------
# Dates as day numbers (days since 1970-01-01)


def _day(date: dt.date) -> int:
    return (date - EPOCH).days


def _month_and_dom(days: Arr) -> tuple[Arr, Arr]:
    """Month index (months since 1970-01) and day of month of each day number."""
    d = np.asarray(days, dtype="datetime64[D]")
    month = d.astype("datetime64[M]")
    return month.astype(np.int64), (d - month.astype("datetime64[D]")).astype(np.int64) + 1


def _month_day(month: Arr, dom: Arr) -> Arr:
    """Day `dom` of month index `month`, clamped to the month's last day."""
    first = np.asarray(month, dtype=np.int64).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    following = (np.asarray(month, dtype=np.int64) + 1).astype("datetime64[M]").astype("datetime64[D]")
    length = following.astype(np.int64) - first
    result: Arr = first + np.minimum(dom, length) - 1
    return result


def _ymd(days: Arr) -> Arr:
    """Day numbers as integers YYYYMMDD."""
    d = np.asarray(days, dtype="datetime64[D]")
    years = d.astype("datetime64[Y]")
    months = d.astype("datetime64[M]")
    y = years.astype(np.int64) + 1970
    m = months.astype(np.int64) - years.astype("datetime64[M]").astype(np.int64) + 1
    dd = (d - months.astype("datetime64[D]")).astype(np.int64) + 1
    result: Arr = y * 10_000 + m * 100 + dd
    return result


# --------------------------------------------------------------------------------------------
# Random helpers (all vectorised)


def _streams(seed: int, chunk: int) -> Callable[[int], np.random.Generator]:
    """One independent generator per purpose, so adding a draw never shifts the others."""
    return lambda purpose: np.random.default_rng([seed, chunk + 1, purpose])  # chunk -1: reference data


def _choose(g: np.random.Generator, weights: Arr, rows: Arr) -> Arr:
    """For each row, a category drawn with probabilities weights[rows] (a 2-D table of weights)."""
    table = np.asarray(weights, dtype=np.float64)
    cumulative = np.cumsum(table, axis=1)
    # Dividing by the row total makes the last non-zero step exactly 1.0, so trailing zero
    # weights can never be drawn.
    cumulative = cumulative / cumulative[:, -1:]
    u = g.random(len(rows))
    result: Arr = (u[:, None] >= cumulative[rows][:, :-1]).sum(axis=1)
    return result


def _between(g: np.random.Generator, low: Arr | int, high: Arr | int) -> Arr:
    """Uniform integers in [low, high] (inclusive), elementwise; high >= low is the caller's duty."""
    lo = np.asarray(low, dtype=np.int64)
    span = np.asarray(high, dtype=np.int64) - lo + 1
    size = np.broadcast(lo, span).shape
    result: Arr = lo + np.floor(g.random(size) * span).astype(np.int64)
    return result


def _names(g: np.random.Generator, n: int) -> Any:
    surname = _pick(SURNAMES, g.integers(0, len(SURNAMES), n))
    first = _pick(GIVEN, g.integers(0, len(GIVEN), n))
    second = _pick(GIVEN, g.integers(0, len(GIVEN), n), g.random(n) < 0.7)
    return pc.binary_join_element_wise(surname, first, pc.fill_null(second, ""), "")


def _id_numbers(g: np.random.Generator, person: Arr, area4: Arr, as_of: int, mix: tuple[int, int]) -> Any:
    """18-digit resident ID numbers with a valid GB 11643 check digit, unique per person number.

    An affine bijection of the person number picks birth date and sequence number, so IDs never
    repeat (up to ID_SPACE_DAYS * 1000 people) and yet look random.
    """
    space = ID_SPACE_DAYS * 1000
    mixed = (np.asarray(person, dtype=np.int64) * mix[0] + mix[1]) % space
    birth = as_of - 22 * 365 - ID_SPACE_DAYS + mixed // 1000
    district = np.array([1, 2, 3, 4, 5, 11, 21, 22], dtype=np.int64)[g.integers(0, 8, len(mixed))]
    body = (np.asarray(area4, dtype=np.int64) * 100 + district) * 10**11 + _ymd(birth) * 1000 + mixed % 1000
    digits = (body[:, None] // (10 ** np.arange(16, -1, -1, dtype=np.int64))) % 10
    check = (digits * ID_WEIGHTS).sum(axis=1) % 11
    return pc.binary_join_element_wise(pc.cast(pa.array(body), pa.string()), _pick(ID_CHECK, check), "")


def _phones(g: np.random.Generator, n: int, missing: float) -> Any:
    prefix = np.array(PHONE_PREFIXES, dtype=np.int64)[g.integers(0, len(PHONE_PREFIXES), n)]
    number = prefix * 10**8 + g.integers(0, 10**8, n)
    present = g.random(n) >= missing
    return pc.if_else(pa.array(present), pc.cast(pa.array(number), pa.string()), pa.scalar(None, pa.string()))


# --------------------------------------------------------------------------------------------
# Reference data: branches, products, officers, channels, agencies


@dataclass(frozen=True)
class _Reference:
    tables: dict[str, Any]
    sub_ids: Any  # pa string array, one per SUB branch
    sub_tier1: Arr
    sub_area: Arr
    sub_weight: Arr
    cm_ids: Any
    cm_start: Arr  # customer managers of SUB branch i: cm_ids[cm_start[i]: cm_start[i] + cm_count[i]]
    cm_count: Arr
    risk_manager: Any  # per tier-1 branch
    channel_ids: Any
    channel_pick: Arr  # [tier1, kind, j] -> channel index (two per tier-1 branch and kind at most)
    channel_count: Arr
    channel_manager: Any
    channel_onboarded: Arr
    agency_ids: Any
    region_agencies: Arr  # [region] -> the three agencies serving it
    id_mix: tuple[int, int]


def _reference(seed: int, loans: int, as_of: int) -> _Reference:
    g = _streams(seed, -1)
    people = g(1)
    regions = [f"R{i + 1:02d}" for i in range(len(TIER1))]
    branch_rows: list[tuple[str, str | None, str, str, str]] = [("HQ", None, "HQ", "总行", "R00")]
    sub_ids: list[str] = []
    sub_tier1: list[int] = []
    sub_area: list[int] = []
    tier2_ids: list[str] = []
    for t, (province, cities) in enumerate(TIER1):
        t1 = f"T1-{t + 1:02d}"
        branch_rows.append((t1, "HQ", "TIER1", f"{province}省分行", regions[t]))
        for c, (city, area) in enumerate(cities):
            t2 = f"T2-{t + 1:02d}-{c + 1}"
            tier2_ids.append(t2)
            branch_rows.append((t2, t1, "TIER2", f"{city}分行", regions[t]))
            for s, suffix in enumerate(SUB_SUFFIXES):
                sub = f"SB-{t + 1:02d}-{c + 1}-{s + 1}"
                branch_rows.append((sub, t2, "SUB", f"{city}{suffix}", regions[t]))
                sub_ids.append(sub)
                sub_tier1.append(t)
                sub_area.append(area)
    branches = _table(BRANCHES, {name: pa.array([r[i] for r in branch_rows], pa.string())
                                 for i, name in enumerate(BRANCHES.names)})
    weight = g(2).gamma(3.0, size=len(sub_ids))

    # Officers: customer managers per SUB branch (a few have left), risk managers per tier-1 and
    # tier-2 branch, a channel manager per tier-2 branch, collectors per tier-1 branch.
    staffing = g(3)
    cm_count = staffing.integers(2, 5, len(sub_ids))
    officer_branch: list[str] = []
    officer_role: list[str] = []
    for sub, count in zip(sub_ids, cm_count, strict=True):
        officer_branch += [sub] * int(count)
        officer_role += ["CUSTOMER_MANAGER"] * int(count)
    cm_total = len(officer_branch)
    t1_ids = [f"T1-{t + 1:02d}" for t in range(len(TIER1))]
    officer_branch += ["HQ", "HQ", *t1_ids, *tier2_ids, *tier2_ids, *t1_ids, *t1_ids]
    officer_role += (["RISK_MANAGER"] * (2 + len(t1_ids) + len(tier2_ids)) + ["CHANNEL_MANAGER"] * len(tier2_ids)
                     + ["COLLECTOR"] * (2 * len(t1_ids)))
    n_officers = len(officer_branch)
    officer_ids = _ids("E", np.arange(1, n_officers + 1), 5)
    active = staffing.random(n_officers) >= 0.06
    officers = _table(OFFICERS, {
        "officer_id": officer_ids, "name": _names(people, n_officers),
        "branch_id": pa.array(officer_branch, pa.string()), "role": pa.array(officer_role, pa.string()),
        "active": pa.array(active),
    })
    risk_manager = officer_ids.slice(cm_total + 2, len(t1_ids))
    channel_manager_of_tier2 = officer_ids.slice(cm_total + 2 + len(t1_ids) + len(tier2_ids), len(tier2_ids))

    # Channels: two per tier-2 branch; per tier-1 branch two car dealers, two online platforms,
    # one estate agent, one business association.
    kinds_per_tier1 = (AUTO_DEALER, AUTO_DEALER, ONLINE, ONLINE, ESTATE_AGENT, ASSOCIATION)
    words = g(4).permutation(len(CHANNEL_WORDS) * 3) % len(CHANNEL_WORDS)
    channel_names: list[str] = []
    channel_branch: list[str] = []
    channel_kind: list[int] = []
    channel_tier1: list[int] = []
    channel_manager_index: list[int] = []
    for t, (_province, cities) in enumerate(TIER1):
        for j, kind in enumerate(kinds_per_tier1):
            c = j // 2
            word = CHANNEL_WORDS[int(words[(t * 6 + j) % len(words)])]
            channel_names.append(CHANNEL_FORMS[kind].format(city=cities[c][0], word=word))
            channel_branch.append(tier2_ids[t * 3 + c])
            channel_kind.append(kind)
            channel_tier1.append(t)
            channel_manager_index.append(t * 3 + c)
    n_channels = len(channel_names)
    channel_ids = _ids("CH", np.arange(1, n_channels + 1), 3)
    status = np.array(["ACTIVE"] * n_channels, dtype=object)
    order = g(5).permutation(n_channels)
    status[order[:5]] = "SUSPENDED"
    status[order[5:8]] = "EXITED"
    onboarded = as_of - HISTORY_DAYS - g(6).integers(30, 1500, n_channels)
    channel_manager = channel_manager_of_tier2.take(pa.array(channel_manager_index))
    channels = _table(CHANNELS, {
        "channel_id": channel_ids, "name": pa.array(channel_names, pa.string()),
        "branch_id": pa.array(channel_branch, pa.string()), "manager_officer_id": channel_manager,
        "status": pa.array(status.tolist(), pa.string()), "onboarded_date": _dates(onboarded),
    })
    channel_pick = np.zeros((len(TIER1), 4, 2), dtype=np.int64)
    channel_count = np.zeros((len(TIER1), 4), dtype=np.int64)
    for i, (t, kind) in enumerate(zip(channel_tier1, channel_kind, strict=True)):
        channel_pick[t, kind, channel_count[t, kind]] = i
        channel_count[t, kind] += 1

    products = _table(PRODUCTS, {
        "product_code": pa.array([p.code for p in PRODUCT_BOOK]),
        "name": pa.array([p.name for p in PRODUCT_BOOK]),
        "category": pa.array([p.category for p in PRODUCT_BOOK]),
        "low_risk": pa.array([p.low_risk for p in PRODUCT_BOOK]),
        "refinance_designed": pa.array([p.refinance_designed for p in PRODUCT_BOOK]),
    })

    # Agencies: every region is served by two active agencies and one suspended or terminated;
    # active capacity scales with the book to about the number of cases over 30 days past due
    # (~3.6% of loans), so it binds in the busier regions.
    agency_ids = _ids("AG", np.arange(1, len(AGENCY_BOOK) + 1), 2)
    agencies = _table(AGENCIES, {
        "agency_id": agency_ids,
        "name": pa.array([a[0] for a in AGENCY_BOOK]),
        "region_codes": pa.array([",".join(regions[r] for r in a[1]) for a in AGENCY_BOOK]),
        "capacity": pa.array([max(5, round(loans * a[3])) for a in AGENCY_BOOK], pa.int32()),
        "status": pa.array([a[2] for a in AGENCY_BOOK]),
    })
    region_agencies = np.array([[i for i, a in enumerate(AGENCY_BOOK) if r in a[1]] for r in range(len(TIER1))])

    space = ID_SPACE_DAYS * 1000
    mixing = g(7)
    multiplier = int(mixing.integers(space // 3, space // 2))
    while math.gcd(multiplier, space) != 1:
        multiplier += 1
    return _Reference(
        tables={"branches": branches, "products": products, "officers": officers, "channels": channels,
                "agencies": agencies},
        sub_ids=pa.array(sub_ids, pa.string()), sub_tier1=np.array(sub_tier1), sub_area=np.array(sub_area),
        sub_weight=weight / weight.sum(), cm_ids=officer_ids.slice(0, cm_total),
        cm_start=np.concatenate([[0], np.cumsum(cm_count)[:-1]]), cm_count=cm_count,
        risk_manager=risk_manager, channel_ids=channel_ids, channel_pick=channel_pick,
        channel_count=channel_count, channel_manager=channel_manager, channel_onboarded=onboarded,
        agency_ids=agency_ids, region_agencies=region_agencies,
        id_mix=(multiplier, int(mixing.integers(0, space))),
    )


def _channel_checks(ref: _Reference, seed: int, as_of: int) -> Any:
    """Quarterly channel checks by the channel manager over the history window."""
    g = _streams(seed, -1)(8)
    n_channels = len(ref.channel_ids)
    quarters = HISTORY_DAYS // 91
    channel = np.repeat(np.arange(n_channels), quarters)
    done = as_of - np.tile(np.arange(quarters) * 91, n_channels) - g.integers(0, 60, len(channel))
    keep = (g.random(len(channel)) < 0.7) & (done >= ref.channel_onboarded[channel])
    channel, done = channel[keep], done[keep]
    n = len(channel)
    return _table(COMPLETED_INSPECTIONS, {
        "inspection_id": _ids("INCH", np.arange(n), 8), "task_id": pa.nulls(n, pa.string()),
        "task_type": pa.array(["CHANNEL_CHECK"] * n, pa.string()), "loan_id": pa.nulls(n, pa.string()),
        "channel_id": ref.channel_ids.take(pa.array(channel)), "completed_date": _dates(done),
        "officer_id": ref.channel_manager.take(pa.array(channel)),
        "outcome": _pick(("NORMAL", "RISK_FOUND"), (g.random(n) < 0.05).astype(np.int64)),
    })


# --------------------------------------------------------------------------------------------
# Amortisation


def _balance(principal: Arr, monthly_rate: Arr, tenor: Arr, k: Arr, method: Arr) -> Arr:
    """Scheduled balance in cents after k instalments, rounded to cents; 0 from the last one on.

    Principal due is the difference of consecutive balances, so the instalments of a plan sum to
    its principal exactly and the last one absorbs the rounding.
    """
    p = principal.astype(np.float64)
    growth_n = np.power(1.0 + monthly_rate, tenor)
    annuity = p * (growth_n - np.power(1.0 + monthly_rate, k)) / (growth_n - 1.0)
    equal_principal = p - k * np.floor(p / tenor)
    balance = np.select([method == EI, method == EP], [annuity, equal_principal], default=p)
    result: Arr = np.where(k >= tenor, 0, np.rint(balance)).astype(np.int64)
    return result


# --------------------------------------------------------------------------------------------
# One chunk of the book


@dataclass
class _Events:
    """Repayment transactions of a chunk, before ids are assigned."""

    loan: list[Arr]
    day: list[Arr]
    cents: list[Arr]

    def add(self, loan: Arr, day: Arr, cents: Arr) -> None:
        self.loan.append(np.asarray(loan, dtype=np.int64))
        self.day.append(np.asarray(day, dtype=np.int64))
        self.cents.append(np.asarray(cents, dtype=np.int64))


def _chunk(
    ref: _Reference, seed: int, chunk: int, first: int, n: int, as_of: int, shares: Sequence[float]
) -> dict[str, Any]:
    g = _streams(seed, chunk)
    out: dict[str, Any] = {}
    loans = np.arange(n)

    # Borrowers: 1-3 loans each (1.2 on average); the segment draw and home branch are theirs.
    draw = g(1)
    per_borrower = draw.choice([1, 2, 3], p=[0.83, 0.14, 0.03], size=n)
    ends = np.cumsum(per_borrower)
    n_borrowers = int(np.searchsorted(ends, n) + 1)
    per_borrower = per_borrower[:n_borrowers].copy()
    per_borrower[-1] -= int(ends[n_borrowers - 1] - n)
    borrower = np.repeat(np.arange(n_borrowers), per_borrower)
    home = draw.choice(len(ref.sub_weight), p=ref.sub_weight, size=n_borrowers)
    region = ref.sub_tier1[home].copy()
    movers = draw.random(n_borrowers) < 0.05
    region[movers] = draw.integers(0, len(TIER1), int(movers.sum()))
    borrower_u = draw.random(n_borrowers)

    # Loan terms by product.
    terms = g(2)
    product = terms.choice(len(PRODUCT_BOOK), p=shares, size=n)
    method = _choose(terms, np.array([p.methods for p in PRODUCT_BOOK]), product)
    tenor_table = np.zeros((len(PRODUCT_BOOK), 4))
    tenor_weights = np.zeros((len(PRODUCT_BOOK), 4))
    for i, p in enumerate(PRODUCT_BOOK):
        tenor_table[i, : len(p.tenors)] = p.tenors
        tenor_weights[i, : len(p.tenors)] = p.tenor_weights
    tenor = tenor_table[product, _choose(terms, tenor_weights, product)].astype(np.int64)
    # Bullet loans are short: principal at maturity within a year.
    tenor = np.where(method == BULLET, np.minimum(tenor, terms.choice([3, 6, 12], size=n)), tenor)
    collateral = _choose(terms, np.array([p.collateral for p in PRODUCT_BOOK]), product)
    autonomous = terms.random(n) < np.array([p.autonomous for p in PRODUCT_BOOK])[product]
    bounds = np.array([p.principal for p in PRODUCT_BOOK], dtype=np.float64)[product]
    yuan = np.exp(np.log(bounds[:, 0]) + terms.random(n) * (np.log(bounds[:, 1]) - np.log(bounds[:, 0])))
    principal = (np.maximum(np.rint(yuan / bounds[:, 2]), 1) * bounds[:, 2]).astype(np.int64) * 100
    rates = np.array([p.rate for p in PRODUCT_BOOK])[product]
    rate_micro = (np.rint((rates[:, 0] + terms.random(n) * (rates[:, 1] - rates[:, 0])) * 10_000) * 100)
    rate_micro = rate_micro.astype(np.int64)
    monthly_rate = rate_micro / 1e6 / 12

    # Where and when: the borrower's home branch mostly; more recent months slightly busier.
    place = g(3)
    branch = np.where(place.random(n) < 0.9, home[borrower], place.choice(len(ref.sub_weight), p=ref.sub_weight,
                                                                           size=n))
    officer = ref.cm_start[branch] + np.floor(place.random(n) * ref.cm_count[branch]).astype(np.int64)
    disbursed = as_of - np.floor(place.random(n) ** 1.25 * (HISTORY_DAYS + 1)).astype(np.int64)
    kind = np.array([p.channel_kind for p in PRODUCT_BOOK])[product]
    tier1 = ref.sub_tier1[branch]
    has_channel = (place.random(n) < np.array([p.channel_share for p in PRODUCT_BOOK])[product]) & (
        ref.channel_count[tier1, kind] > 0
    )
    channel = ref.channel_pick[tier1, kind, np.floor(place.random(n) * ref.channel_count[tier1, kind]).astype(int)]

    start_month, dom = _month_and_dom(disbursed)

    def due(k: Arr, rows: Arr | None = None) -> Arr:
        at = slice(None) if rows is None else rows
        return _month_day(start_month[at] + k, dom[at])

    # Instalments due on or before the business date (and strictly before it).
    elapsed = _month_and_dom(np.array([as_of]))[0][0] - start_month
    months_due = np.where(due(elapsed) <= as_of, elapsed, elapsed - 1)
    n_past = np.clip(months_due, 0, tenor)
    n_before = np.clip(np.where(due(elapsed) < as_of, elapsed, elapsed - 1), 0, tenor)

    # Segments: the borrower's draw, re-drawn for one loan in five; riskier products map the same
    # draw to worse segments.
    behave = g(4)
    u = np.where(behave.random(n) < 0.8, borrower_u[borrower], behave.random(n))
    risk = np.array([p.risk for p in PRODUCT_BOOK])[product]
    probabilities = np.array(SEGMENT_BASE)[None, :] * np.where(np.arange(len(SEGMENT_BASE)) < RISKY_SEGMENTS,
                                                                risk[:, None], 1.0)
    segment = (u[:, None] >= np.cumsum(probabilities, axis=1)).sum(axis=1)

    big = np.int64(10**6)
    none = np.full(n, big)
    # ROLL: pays until instalment k_stop, never after; unborn defaults behave as on time.
    k_stop = np.where((segment == ROLL) & (n_past >= 1), _between(behave, 1, np.maximum(n_past, 1)), none)
    segment = np.where((segment == ROLL) & (n_past < 1), ON_TIME, segment)
    # SETTLE: settles the whole balance with instalment k_settle; the plan ends there.
    settle_ok = (segment == SETTLE) & (tenor >= 2) & (n_past >= 1)
    k_settle = np.where(settle_ok, _between(behave, 1, np.maximum(np.minimum(n_past, tenor - 1), 1)), none)
    # PREPAY: pays m future instalments together with instalment k_prepay.
    prepay_ok = (segment == PREPAY) & (tenor >= 2) & (n_past >= 1)
    k_prepay = np.where(prepay_ok, _between(behave, 1, np.maximum(np.minimum(n_past, tenor - 1), 1)), none)
    m_prepay = np.where(prepay_ok, _between(behave, 1, np.clip(tenor - k_prepay, 1, 3)), 0)
    # RESTRUCTURE: instalments k_arrears..k_restr fall into arrears, the loan is restructured a few
    # days after instalment k_restr (arrears paid, the balance re-amortised over the remaining
    # term plus an extension); a quarter default again later.
    restr_ok = (segment == RESTRUCTURE) & (tenor >= 3) & (n_before >= 1)
    k_restr = np.where(restr_ok, _between(behave, 1, np.maximum(np.minimum(n_before, tenor - 1), 1)), none)
    arrears_len = _between(behave, 1, np.clip(np.minimum(k_restr, 9), 1, None))
    k_arrears = np.where(restr_ok, k_restr - arrears_len + 1, none)
    restr_day = np.where(restr_ok, due(np.minimum(k_restr, tenor)) + _between(
        behave, 1, np.clip(np.minimum(27, as_of - due(np.minimum(k_restr, tenor))), 1, None)), 0)
    extension = behave.choice([6, 12, 24], size=n)
    tenor_2 = np.where(restr_ok, tenor - k_restr + extension, 0)
    restructure_count = np.where(behave.random(n) < 0.2, 2, 1)
    for ok, name in ((settle_ok, SETTLE), (prepay_ok, PREPAY), (restr_ok, RESTRUCTURE)):
        segment = np.where((segment == name) & ~ok, ON_TIME, segment)

    rows_per_loan = np.where(restr_ok, k_restr + tenor_2, np.where(settle_ok, k_settle, tenor))
    maturity_k = np.where(restr_ok, rows_per_loan, tenor)
    maturity = due(maturity_k)
    # A quarter of restructured loans default again after restructuring.
    months_after = np.clip(months_due, 0, rows_per_loan) - k_restr
    redefault = restr_ok & (behave.random(n) < 0.25) & (months_after >= 1)
    k_stop = np.where(redefault, k_restr + _between(behave, 1, np.maximum(months_after, 1)), k_stop)

    # The schedule, one row per instalment.
    total_rows = int(rows_per_loan.sum())
    starts = np.concatenate([[0], np.cumsum(rows_per_loan)[:-1]]).astype(np.int64)
    row_loan = np.repeat(loans, rows_per_loan)
    k = np.arange(total_rows, dtype=np.int64) - starts[row_loan] + 1
    row_due = due(k, row_loan)
    phase_2 = restr_ok[row_loan] & (k > k_restr[row_loan])
    restr_balance = _balance(principal, monthly_rate, tenor, np.minimum(k_restr, tenor), method)
    plan_p = np.where(phase_2, restr_balance[row_loan], principal[row_loan])
    plan_n = np.where(phase_2, tenor_2[row_loan], tenor[row_loan])
    plan_k = np.where(phase_2, k - k_restr[row_loan], k)
    r_row = monthly_rate[row_loan]
    m_row = method[row_loan]
    opening = _balance(plan_p, r_row, plan_n, plan_k - 1, m_row)
    closing = _balance(plan_p, r_row, plan_n, plan_k, m_row)
    closing[starts + rows_per_loan - 1] = 0  # the last row takes what is left (early settlement)
    principal_due = opening - closing
    interest_due = np.rint(opening * r_row).astype(np.int64)
    row_total = principal_due + interest_due
    loan_ids = _ids("LN", first + loans + 1, 10)
    out["schedule"] = _table(SCHEDULE, {
        "loan_id": loan_ids.take(pa.array(row_loan)), "installment_no": _ints(k), "due_date": _dates(row_due),
        "principal_due": _money(principal_due), "interest_due": _money(interest_due),
    })

    # Payments per instalment: on the due date or a few days early; now and then a few days late
    # (technical overdue); the LATE segment often and longer; arrears paid on restructuring day.
    pay = g(5)
    seg_row = segment[row_loan]
    paid_at = row_due - np.where(pay.random(total_rows) < 0.7, 0, pay.integers(1, 6, total_rows))
    late = np.where(seg_row == LATE, pay.random(total_rows) < 0.15, pay.random(total_rows) < 0.005)
    long_delay = pay.choice([0, 1, 2], p=[0.65, 0.22, 0.13], size=total_rows)
    delay = np.where(seg_row == LATE, np.select([long_delay == 0, long_delay == 1],
                                                [pay.integers(1, 16, total_rows), pay.integers(16, 46, total_rows)],
                                                pay.integers(46, 121, total_rows)),
                     pay.integers(1, 6, total_rows))
    paid_at = np.where(late, row_due + delay, paid_at)
    in_arrears = (k >= k_arrears[row_loan]) & (k <= k_restr[row_loan])
    paid_at = np.where(in_arrears, restr_day[row_loan], paid_at)
    prepaid = (k > k_prepay[row_loan]) & (k <= k_prepay[row_loan] + m_prepay[row_loan])
    lump_row = starts[row_loan] + np.minimum(k_prepay[row_loan], rows_per_loan[row_loan]) - 1
    paid_at = np.where(prepaid, paid_at[lump_row], paid_at)
    unpaid = k >= k_stop[row_loan]
    # PARTIAL: a third of instalments are paid in two parts; some stay a few cents short for good.
    partial = (seg_row == PARTIAL) & (pay.random(total_rows) < 0.3) & ~unpaid
    short_for_good = partial & (pay.random(total_rows) < 0.15)
    first_part = np.where(short_for_good, row_total - pay.integers(1, 100, total_rows),
                          np.rint(row_total * pay.uniform(0.3, 0.9, total_rows)).astype(np.int64))
    first_part = np.where(partial, np.clip(first_part, 1, None), row_total)
    rest_at = paid_at + pay.integers(3, 61, total_rows)
    events = _Events([], [], [])
    paid = ~unpaid & (row_total > 0)
    events.add(row_loan[paid], paid_at[paid], first_part[paid])
    rest = partial & ~short_for_good & (row_total - first_part > 0)
    events.add(row_loan[rest], rest_at[rest], (row_total - first_part)[rest])

    # Recoveries: a third of defaulted loans pay part of an instalment later on.
    extra = g(6)
    defaulted = k_stop < big
    stop_row = starts + np.minimum(k_stop, rows_per_loan) - 1
    recovery = defaulted & (extra.random(n) < 0.3)
    events.add(loans[recovery], (row_due[stop_row] + extra.integers(10, 201, n))[recovery],
               np.rint(row_total[stop_row] * extra.uniform(0.1, 0.6, n)).astype(np.int64)[recovery])
    # Reversals: a payment bounces a few days later; three in four are paid again afterwards.
    reverse = (extra.random(n) < 0.03) & (n_past >= 1)
    reversed_row = starts + _between(extra, 1, np.maximum(np.minimum(n_past, rows_per_loan), 1)) - 1
    reverse &= paid[reversed_row] & (paid_at[reversed_row] <= as_of)
    bounced_at = paid_at[reversed_row] + extra.integers(1, 6, n)
    repaid_at = bounced_at + extra.integers(1, 16, n)
    repaid = reverse & (extra.random(n) < 0.75)
    events.add(loans[reverse], bounced_at[reverse], -first_part[reversed_row][reverse])
    events.add(loans[repaid], repaid_at[repaid], first_part[reversed_row][repaid])

    ev_loan = np.concatenate(events.loan)
    ev_day = np.concatenate(events.day)
    ev_cents = np.concatenate(events.cents)
    seen = ev_day <= as_of  # the extract holds what has value date up to the business date
    ev_loan, ev_day, ev_cents = ev_loan[seen], ev_day[seen], ev_cents[seen]
    order = np.lexsort((ev_cents < 0, ev_day, ev_loan))
    ev_loan, ev_day, ev_cents = ev_loan[order], ev_day[order], ev_cents[order]
    out["repayments"] = _table(REPAYMENTS, {
        "txn_id": _ids(f"TX{chunk:04d}", np.arange(len(ev_loan)), 10),
        "loan_id": _ids("LN", first + ev_loan + 1, 10), "value_date": _dates(ev_day), "amount": _money(ev_cents),
    })

    # Status: written off some months after default; settled once everything due is paid.
    net_paid = np.rint(np.bincount(ev_loan, weights=ev_cents.astype(np.float64), minlength=n)).astype(np.int64)
    total_due = np.rint(np.bincount(row_loan, weights=row_total.astype(np.float64), minlength=n)).astype(np.int64)
    last_event = np.full(n, -1, dtype=np.int64)
    if len(ev_loan):
        tail = np.r_[ev_loan[1:] != ev_loan[:-1], True]
        last_event[ev_loan[tail]] = ev_day[tail]
    written_off_at = row_due[stop_row] + extra.integers(180, 541, n)
    written_off = defaulted & (extra.random(n) < 0.5) & (written_off_at <= as_of)
    settled = ~written_off & (net_paid == total_due) & (last_event >= 0)
    status = np.select([written_off, settled], [2, 1], 0)
    closed = np.where(written_off, written_off_at, last_event)
    npl_at_restructuring = restr_day - due(np.minimum(k_arrears, tenor)) > 90
    out["loans"] = _table(LOANS, {
        "loan_id": loan_ids, "borrower_id": _ids("CU", first + borrower + 1, 10),
        "product_code": _pick([p.code for p in PRODUCT_BOOK], product), "branch_id": ref.sub_ids.take(pa.array(branch)),
        "officer_id": ref.cm_ids.take(pa.array(officer)),
        "channel_id": pc.if_else(pa.array(has_channel), ref.channel_ids.take(pa.array(channel)),
                                 pa.scalar(None, pa.string())),
        "principal": _money(principal), "disbursement_date": _dates(disbursed), "maturity_date": _dates(maturity),
        "repayment_method": _pick(REPAYMENT_METHODS, method),
        "payment_mode": _pick(("ENTRUSTED", "AUTONOMOUS"), autonomous.astype(np.int64)),
        "annual_rate": _decimal(rate_micro, pa.decimal128(9, 6)), "collateral_type": _pick(COLLATERAL_TYPES, collateral),
        "restructured_date": _dates(restr_day, restr_ok), "restructure_count": _ints(restructure_count, restr_ok),
        "restructured_from_npl": _bools(npl_at_restructuring, restr_ok),
        "status": _pick(("ACTIVE", "SETTLED", "WRITTEN_OFF"), status), "closed_date": _dates(closed, status > 0),
    })

    # Borrowers (PII is synthetic).
    pii = g(7)
    out["borrowers"] = _table(BORROWERS, {
        "borrower_id": _ids("CU", first + np.arange(n_borrowers) + 1, 10), "name": _names(pii, n_borrowers),
        "id_number": _id_numbers(pii, first + np.arange(n_borrowers), ref.sub_area[home], as_of, ref.id_mix),
        "phone": _phones(pii, n_borrowers, 0.03),
        "region_code": _pick([f"R{i + 1:02d}" for i in range(len(TIER1))], region),
    })

    context = _Context(ref, g, chunk, n, as_of, loan_ids, borrower, first, product, method, collateral, autonomous,
                       principal, disbursed, maturity, tier1, branch, officer, segment, defaulted,
                       row_due[stop_row], status, closed, region[borrower], restr_ok)
    out["collateral"] = _collateral(context)
    out["guarantors"] = _guarantors(context)
    out["risk_signals"], signals = _signals(context)
    out["overrides"] = _overrides(context, signals)
    out["completed_inspections"] = _inspections(context, signals)
    late_rows = late & ~unpaid & ~in_arrears & (paid_at - row_due >= 3)
    episodes = (
        np.concatenate([loans[defaulted], row_loan[late_rows], loans[restr_ok]]),
        np.concatenate([row_due[stop_row][defaulted], row_due[late_rows], due(np.minimum(k_arrears, tenor))[restr_ok]]),
        np.concatenate([np.where(written_off, written_off_at, as_of + 1)[defaulted], paid_at[late_rows],
                        restr_day[restr_ok]]),
    )
    out["collection_actions"] = _actions(context, *episodes)
    return out


@dataclass(frozen=True)
class _Context:
    """Loan attributes the child tables draw on."""

    ref: _Reference
    g: Callable[[int], np.random.Generator]
    chunk: int
    n: int
    as_of: int
    loan_ids: Any
    borrower: Arr
    first: int
    product: Arr
    method: Arr
    collateral: Arr
    autonomous: Arr
    principal: Arr
    disbursed: Arr
    maturity: Arr
    tier1: Arr
    branch: Arr
    officer: Arr
    segment: Arr
    defaulted: Arr
    default_due: Arr
    status: Arr
    closed: Arr
    region: Arr
    restructured: Arr


def _collateral(c: _Context) -> Any:
    """Mortgaged and pledged loans: one item, a second one for some mortgages; some revalued."""
    g = c.g(10)
    secured = np.flatnonzero((c.collateral == MORTGAGE_C) | (c.collateral == PLEDGE_C))
    items = np.where((c.collateral[secured] == MORTGAGE_C) & (g.random(len(secured)) < 0.1), 2, 1)
    loan = np.repeat(secured, items)
    second = np.r_[False, loan[1:] == loan[:-1]]
    m = len(loan)
    pledge = c.collateral[loan] == PLEDGE_C
    ltv = np.where(pledge, g.uniform(0.5, 0.9, m), g.uniform(0.35, 0.8, m))
    value = c.principal[loan] / ltv * np.where(second, g.uniform(0.2, 0.5, m), 1.0)
    valued = c.disbursed[loan] - g.integers(5, 41, m)
    revalued = (g.random(m) < 0.35) & (c.as_of - c.disbursed[loan] > 60)
    valued = np.where(revalued, c.as_of - g.integers(0, 400, m), valued)
    valued = np.maximum(valued, c.disbursed[loan] - 40)
    value = np.where(revalued, value * g.uniform(0.7, 1.15, m), value)
    return _table(COLLATERAL, {
        "collateral_id": _ids(f"CL{c.chunk:04d}", np.arange(m), 8), "loan_id": c.loan_ids.take(pa.array(loan)),
        "collateral_type": _pick(COLLATERAL_TYPES, c.collateral[loan]),
        "appraised_value": _money(np.rint(value / 10_000).astype(np.int64) * 10_000), "valuation_date": _dates(valued),
    })


def _guarantors(c: _Context) -> Any:
    g = c.g(11)
    guaranteed = np.flatnonzero(c.collateral == GUARANTEE_C)
    loan = np.repeat(guaranteed, np.where(g.random(len(guaranteed)) < 0.2, 2, 1))
    m = len(loan)
    person = GUARANTOR_ID_OFFSET + c.first + np.arange(m)
    return _table(GUARANTORS, {
        "guarantor_id": _ids(f"GU{c.chunk:04d}", np.arange(m), 8), "loan_id": c.loan_ids.take(pa.array(loan)),
        "name": _names(g, m), "id_number": _id_numbers(g, person, c.ref.sub_area[c.branch[loan]], c.as_of,
                                                       c.ref.id_mix),
        "phone": _phones(g, m, 0.05),
    })


SIGNAL_OF = {name: i for i, name in enumerate(SIGNAL_TYPES)}
# Signal mix on defaulted loans and on the rest of the book.
SIGNALS_BAD = {"LITIGATION": 0.25, "OTHER_BANK_OVERDUE": 0.2, "CREDIT_DOWNGRADE": 0.15, "BORROWER_DECEASED": 0.05,
               "BORROWER_MISSING": 0.1, "LOST_CAPACITY": 0.1, "FRAUD": 0.05, "RISK_EXIT_LIST": 0.1}
SIGNALS_GOOD = {"OFF_PURPOSE_USE": 0.2, "REFINANCE_OLD_WITH_NEW": 0.15, "OTHER_BANK_OVERDUE": 0.2,
                "CREDIT_DOWNGRADE": 0.15, "MATERIAL_CHANGE": 0.15, "LITIGATION": 0.05, "RISK_EXIT_LIST": 0.05,
                "LOST_CAPACITY": 0.05}
MAJOR_SIGNALS = ("LITIGATION", "FRAUD", "BORROWER_DECEASED", "BORROWER_MISSING", "LOST_CAPACITY", "RISK_EXIT_LIST")
ESTATE_SIGNALS = ("BORROWER_DECEASED", "BORROWER_MISSING", "LOST_CAPACITY")


def _weights(mix: dict[str, float]) -> Arr:
    return np.array([mix.get(name, 0.0) for name in SIGNAL_TYPES])


@dataclass(frozen=True)
class _SignalFacts:
    """What inspections need from the signals: per loan, the date of its MAJOR loan-level signal
    (-1 if none); and each loan-level risk-exit listing with the day it ends."""

    major_at: Arr
    exit_loan: Arr
    exit_from: Arr
    exit_until: Arr


def _signals(c: _Context) -> tuple[Any, _SignalFacts]:
    """Signals on 40% of defaulted loans and 1.5% of the rest; refinancing on the renewal product."""
    g = c.g(12)
    bad = c.defaulted
    renew = c.product == [p.code for p in PRODUCT_BOOK].index("BUSINESS_RENEW")
    flagged = np.flatnonzero(np.where(bad, g.random(c.n) < 0.4, g.random(c.n) < 0.015))
    refinance = np.flatnonzero(renew & (g.random(c.n) < 0.1))
    loan = np.concatenate([flagged, refinance])
    m = len(loan)
    kind = np.where(bad[loan], 0, 1)
    signal = _choose(g, np.stack([_weights(SIGNALS_BAD), _weights(SIGNALS_GOOD)]), kind)
    signal[len(flagged):] = SIGNAL_OF["REFINANCE_OLD_WITH_NEW"]
    if c.chunk == 0:
        # Small books still carry every kind of signal.
        signal[: min(m, len(SIGNAL_TYPES))] = np.arange(min(m, len(SIGNAL_TYPES)))
    # Raised while the loan is on book (defaulted loans: around the default).
    last = np.where(c.status[loan] > 0, c.closed[loan], c.as_of)
    around = np.where(bad[loan], c.default_due[loan] + g.integers(-60, 121, m),
                      c.disbursed[loan] + np.floor(g.random(m) * (last - c.disbursed[loan] + 1)).astype(np.int64))
    raised = np.clip(around, c.disbursed[loan], last)
    cleared_at = raised + g.integers(15, 241, m)
    cleared = (g.random(m) < np.where(bad[loan], 0.05, 0.3)) & (cleared_at <= c.as_of)
    names = np.array(SIGNAL_TYPES, dtype=object)[signal]
    other_bank = names == "OTHER_BANK_OVERDUE"
    estate = np.isin(names, ESTATE_SIGNALS)
    major = np.isin(names, MAJOR_SIGNALS) | (g.random(m) < 0.2)
    on_borrower = g.random(m) < 0.25  # a borrower-level signal covers all the borrower's loans
    days_overdue = np.where(bad[loan], g.integers(30, 401, m), g.integers(1, 91, m))
    table = _table(RISK_SIGNALS, {
        "signal_id": _ids(f"RS{c.chunk:04d}", np.arange(m), 8),
        "loan_id": pc.if_else(pa.array(~on_borrower), c.loan_ids.take(pa.array(loan)), pa.scalar(None, pa.string())),
        "borrower_id": _ids("CU", c.first + c.borrower[loan] + 1, 10), "signal_type": _pick(SIGNAL_TYPES, signal),
        "severity": _pick(("MINOR", "MAJOR"), major.astype(np.int64)), "signal_date": _dates(raised),
        "cleared_date": _dates(cleared_at, cleared), "days_overdue": _ints(days_overdue, other_bank),
        "has_estate": _bools(g.random(m) < 0.5, estate),
    })
    major_at = np.full(c.n, -1, dtype=np.int64)
    loan_major = major & ~on_borrower
    major_at[loan[loan_major]] = raised[loan_major]
    listed = (names == "RISK_EXIT_LIST") & ~on_borrower
    until = np.where(cleared, cleared_at, np.where(c.status[loan] > 0, c.closed[loan], c.as_of))
    return table, _SignalFacts(major_at, loan[listed], raised[listed], until[listed])


def _overrides(c: _Context, signals: _SignalFacts) -> Any:
    """Manual overrides on a few troubled loans: some expired, most still in force."""
    g = c.g(13)
    troubled = c.defaulted | c.restructured | (signals.major_at >= 0)
    chosen = np.flatnonzero(troubled & (g.random(c.n) < 0.04) & (c.as_of - c.disbursed > 30))
    m = len(chosen)
    downgrade = c.defaulted[chosen] & (g.random(m) < 0.5)
    risk_class = np.where(downgrade, g.integers(3, 5, m), g.integers(0, 2, m))
    approved = c.disbursed[chosen] + 30 + np.floor(g.random(m) * (c.as_of - c.disbursed[chosen] - 29)).astype(np.int64)
    expiry = approved + g.integers(90, 366, m)
    reason = np.where(downgrade, g.choice([1, 3], size=m), g.choice([0, 2, 4], size=m))
    return _table(OVERRIDES, {
        "override_id": _ids(f"OV{c.chunk:04d}", np.arange(m), 8), "loan_id": c.loan_ids.take(pa.array(chosen)),
        "risk_class": _pick(("NORMAL", "SPECIAL_MENTION", "SUBSTANDARD", "DOUBTFUL", "LOSS"), risk_class),
        "reason": _pick(OVERRIDE_REASONS, reason), "approver": c.ref.risk_manager.take(pa.array(c.tier1[chosen])),
        "approved_date": _dates(approved), "expiry_date": _dates(expiry),
    })


def _periodic(g: np.random.Generator, loan: Arr, start: Arr, until: Arr, period: int, share: float,
              as_of: int) -> tuple[Arr, Arr]:
    """Checks every `period` days after `start` while before `until`; `share` of them done."""
    count = np.clip((np.minimum(until, as_of) - start) // period, 0, 40)
    which = np.repeat(np.arange(len(loan)), count)
    number = np.arange(len(which)) - np.repeat(np.cumsum(count) - count, count) + 1
    done_at = start[which] + period * number + g.integers(0, 15, len(which))
    keep = (g.random(len(which)) < share) & (done_at <= as_of)
    return loan[which][keep], done_at[keep]


def _inspections(c: _Context, signals: _SignalFacts) -> Any:
    """Checks staff recorded (task types of schemas/inspections.py): call-backs, monthly samples,
    periodic checks, risk-exit visits, signal verification, maturity notices, collateral releases."""
    g = c.g(14)
    major_at = signals.major_at
    parts: list[tuple[str, Arr, Arr, Any]] = []
    loans = np.arange(c.n)
    # First call-back: 3 days for autonomous payment, 7 otherwise; most on time.
    limit = np.where(c.autonomous, 3, 7)
    callback_at = c.disbursed + np.where(g.random(c.n) < 0.88, _between(g, 1, limit), _between(g, limit + 1, 15))
    keep = (g.random(c.n) < 0.92) & (callback_at <= c.as_of)
    parts.append(("FIRST_CALLBACK", loans[keep], callback_at[keep], c.ref.cm_ids.take(pa.array(c.officer[keep]))))
    # Monthly on-site sample: about 12% of a month's new loans, by the 20th of the next month.
    month, _ = _month_and_dom(c.disbursed)
    sample_at = _month_day(month + 1, np.where(g.random(c.n) < 0.9, g.integers(1, 21, c.n), g.integers(21, 29, c.n)))
    keep = (g.random(c.n) < 0.12) & (sample_at <= c.as_of)
    parts.append(("MONTHLY_SAMPLE", loans[keep], sample_at[keep], c.ref.cm_ids.take(pa.array(c.officer[keep]))))
    # While on book: purpose checks of autonomous-payment loans (quarterly), low-risk products
    # (yearly), non-instalment loans (half-yearly); risk-exit clients visited monthly.
    end = np.where(c.status > 0, c.closed, c.as_of)
    low_risk = np.array([p.low_risk for p in PRODUCT_BOOK])[c.product]
    non_instalment = (c.method == BULLET) | (c.method == IO)
    for task, subset, period, share in (("PURPOSE_CHECK", c.autonomous, 91, 0.75),
                                        ("LOW_RISK_CHECK", low_risk, 365, 0.8),
                                        ("PERIODIC_CHECK", non_instalment & ~low_risk, 182, 0.6)):
        loan, done_at = _periodic(g, loans[subset], c.disbursed[subset], end[subset], period, share, c.as_of)
        parts.append((task, loan, done_at, c.ref.cm_ids.take(pa.array(c.officer[loan]))))
    loan, done_at = _periodic(g, signals.exit_loan, signals.exit_from, signals.exit_until, 30, 0.7, c.as_of)
    parts.append(("RISK_EXIT_VISIT", loan, done_at, c.ref.cm_ids.take(pa.array(c.officer[loan]))))
    # Major signals: on-site verification by the tier-1 risk manager.
    verified_at = major_at + g.integers(1, 21, c.n)
    keep = (major_at >= 0) & (g.random(c.n) < 0.7) & (verified_at <= c.as_of)
    parts.append(("SIGNAL_VERIFICATION", loans[keep], verified_at[keep],
                  c.ref.risk_manager.take(pa.array(c.tier1[keep]))))
    # Bullet loans: maturity notice before maturity.
    notice_at = c.maturity - g.integers(10, 31, c.n)
    keep = (c.method == BULLET) & (g.random(c.n) < 0.9) & (notice_at <= c.as_of) & (notice_at > c.disbursed)
    parts.append(("MATURITY_NOTICE", loans[keep], notice_at[keep], c.ref.cm_ids.take(pa.array(c.officer[keep]))))
    # Settled secured loans: collateral released.
    release_at = c.closed + g.integers(3, 31, c.n)
    keep = ((c.status == 1) & ((c.collateral == MORTGAGE_C) | (c.collateral == PLEDGE_C)) & (g.random(c.n) < 0.85)
            & (release_at <= c.as_of))
    parts.append(("COLLATERAL_RELEASE", loans[keep], release_at[keep], c.ref.cm_ids.take(pa.array(c.officer[keep]))))

    loan = np.concatenate([p[1] for p in parts])
    m = len(loan)
    risky = np.isin(c.segment[loan], (ROLL, RESTRUCTURE))
    found = g.random(m) < np.where(risky, 0.25, 0.03)
    return _table(COMPLETED_INSPECTIONS, {
        "inspection_id": _ids(f"IN{c.chunk:04d}", np.arange(m), 9), "task_id": pa.nulls(m, pa.string()),
        "task_type": _pick([p[0] for p in parts], np.repeat(np.arange(len(parts)), [len(p[1]) for p in parts])),
        "loan_id": c.loan_ids.take(pa.array(loan)), "channel_id": pa.nulls(m, pa.string()),
        "completed_date": _dates(np.concatenate([p[2] for p in parts])),
        "officer_id": pa.concat_arrays([p[3] for p in parts]) if m else pa.array([], pa.string()),
        "outcome": _pick(("NORMAL", "RISK_FOUND"), found.astype(np.int64)),
    })


ACTION_TYPES = ("SMS", "PHONE", "LETTER", "FIELD_VISIT", "LEGAL")
# Action mix by stage: up to 30 DPD, 31-90, over 90 (DOMAIN.md section 4).
ACTION_MIX = np.array([[0.4, 0.5, 0.1, 0.0, 0.0], [0.1, 0.5, 0.15, 0.25, 0.0], [0.05, 0.45, 0.1, 0.3, 0.1]])
# Outcomes per action type: CONTACTED, NO_ANSWER, PROMISE_TO_PAY, VISIT_FAILED, FILED.
OUTCOMES = ("CONTACTED", "NO_ANSWER", "PROMISE_TO_PAY", "VISIT_FAILED", "FILED")
OUTCOME_MIX = np.array([[0.85, 0.15, 0, 0, 0], [0.35, 0.4, 0.25, 0, 0], [0.9, 0.1, 0, 0, 0], [0.4, 0, 0.25, 0.35, 0],
                        [0, 0, 0, 0, 1]])


def _actions(c: _Context, loan: Arr, overdue_since: Arr, until: Arr) -> Any:
    """Collection actions over each delinquency episode (from the missed due date to cure,
    write-off or the business date), 08:00-22:00, outsourced to an agency from 31 DPD on."""
    g = c.g(15)
    end = np.minimum(until, c.as_of + 1)
    span = end - overdue_since - 1
    count = np.where(span >= 1, np.clip(np.ceil(span / 6), 1, 40), 0).astype(np.int64)
    episode = np.repeat(np.arange(len(loan)), count)
    j = np.arange(len(episode)) - np.repeat(np.cumsum(count) - count, count)
    offset = 1 + np.floor((j + g.random(len(episode))) * span[episode] / count[episode]).astype(np.int64)
    dpd = np.minimum(offset, span[episode])
    day = overdue_since[episode] + dpd
    who = loan[episode]
    m = len(who)
    stage = np.select([dpd <= 30, dpd <= 90], [0, 1], 2)
    action = _choose(g, ACTION_MIX, stage)
    unreachable = (c.g(16).random(c.n) < 0.2)[who]  # lost contact: calls and visits fail
    outcome = _choose(g, OUTCOME_MIX, action)
    outcome = np.where(unreachable & (action == 1), 1, np.where(unreachable & (action == 3), 3, outcome))
    contact = _choose(g, np.array([[0.8, 0.12, 0.08]]), np.zeros(m, dtype=np.int64))
    # SMS and letters go to the borrower; guarantors only exist on guaranteed loans.
    contact = np.where(np.isin(action, (0, 2)) | ((contact == 1) & (c.collateral[who] != GUARANTEE_C)), 0, contact)
    agencies = c.ref.region_agencies[c.region[who], np.floor(g.random(m) * 3).astype(np.int64)]
    outsourced = (dpd > 30) & (g.random(m) < 0.7) & (action != 4)
    seconds = day * 86_400 + 8 * 3600 + g.integers(0, 14 * 3600, m)
    return _table(COLLECTION_ACTIONS, {
        "action_id": _ids(f"CA{c.chunk:04d}", np.arange(m), 9), "loan_id": c.loan_ids.take(pa.array(who)),
        "action_type": _pick(ACTION_TYPES, action),
        "action_time": pa.array(seconds * 1_000_000, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "contact_type": _pick(("BORROWER", "GUARANTOR", "THIRD_PARTY"), contact),
        "outcome": _pick(OUTCOMES, outcome), "agency_id": _pick(c.ref.agency_ids, agencies, outsourced),
    })


# --------------------------------------------------------------------------------------------
# Deliberately bad rows (for quarantine tests)


def _replace(table: Any, rows: Arr, columns: dict[str, Any]) -> Any:
    """Copies of `rows` of `table` with some columns replaced."""
    picked = table.take(pa.array(rows, pa.int64()))
    for name, values in columns.items():
        picked = picked.set_column(picked.schema.get_field_index(name), picked.schema.field(name), values)
    return picked


def _days_of(column: Any, rows: Arr) -> Arr:
    days: Arr = column.take(pa.array(rows, pa.int64())).cast(pa.int32()).to_numpy().astype(np.int64)
    return days


def _bad_rows(tables: dict[str, Any], fraction: float, g: np.random.Generator, chunk: int) -> dict[str, Any]:
    """Append about `fraction` bad rows to loans, schedule and repayments, cycling through kinds:

    loans: null loan_id, negative principal, conflicting duplicate loan_id, maturity before
    disbursement; schedule: null loan_id, unknown loan, due date before disbursement, conflicting
    duplicate (loan_id, installment_no), negative principal_due; repayments: null txn_id, unknown
    loan, conflicting duplicate txn_id, null value_date.
    """
    out = dict(tables)
    for name, kinds in (("loans", 4), ("schedule", 5), ("repayments", 4)):
        table = tables[name]
        if table.num_rows == 0:
            continue
        count = max(1, round(fraction * table.num_rows))
        rows = np.sort(g.choice(table.num_rows, count, replace=False))
        kind = np.arange(count) % kinds
        bad: list[Any] = []
        for k in range(kinds):
            at = rows[kind == k]
            m = len(at)
            if m == 0:
                continue
            fresh = _ids(f"BAD{chunk:04d}{name[0].upper()}{k}", np.arange(m), 6)
            null = pa.nulls(m, pa.string())
            if name == "loans":
                change = [
                    {"loan_id": null},
                    {"loan_id": fresh, "principal": _money(-np.arange(1, m + 1) * 100_00)},
                    {"principal": _money(np.arange(1, m + 1) * 100_00 + 1)},
                    {"loan_id": fresh, "maturity_date": _dates(_days_of(table.column("disbursement_date"), at) - 1)},
                ][k]
            elif name == "schedule":
                loans = tables["loans"]
                index = pc.index_in(table.column("loan_id").take(pa.array(at)), value_set=loans.column("loan_id"))
                disbursed = _days_of(loans.column("disbursement_date"), index.to_numpy())
                change = [
                    {"loan_id": null},
                    {"loan_id": fresh},
                    {"installment_no": _ints(np.zeros(m)),
                     "due_date": _dates(disbursed - 31)},
                    {"principal_due": _money(np.arange(1, m + 1) * 100 + 7)},
                    {"installment_no": _ints(np.full(m, 9_999)), "principal_due": _money(-np.arange(1, m + 1) * 100)},
                ][k]
            else:
                change = [
                    {"txn_id": null},
                    {"loan_id": fresh},
                    {"amount": _money(np.arange(1, m + 1) * 100 + 3)},
                    {"txn_id": fresh, "value_date": pa.nulls(m, pa.date32())},
                ][k]
            bad.append(_replace(table, at, change))
        out[name] = pa.concat_tables([table, *bad])
    return out


# --------------------------------------------------------------------------------------------
# Writing


def _write(table: Any, folder: Path, part: str, fmt: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(table, folder / f"{part}.parquet", compression="snappy")
        return
    columns = []
    for column in table.columns:
        if pa.types.is_timestamp(column.type):
            # Whole seconds, no zone suffix: Spark reads it in the session time zone (UTC).
            column = pc.strftime(column.cast(pa.timestamp("s", tz="UTC")), format="%Y-%m-%d %H:%M:%S")
        columns.append(column)
    plain = pa.Table.from_arrays(columns, names=table.column_names)
    pa_csv.write_csv(plain, folder / f"{part}.csv", pa_csv.WriteOptions(quoting_style="needed"))


def product_shares(mix: Mapping[str, float] | None) -> list[float]:
    """Each product's share of the loans, in `PRODUCT_BOOK` order: the book's own, or `mix`'s scaled."""
    if mix is None:
        return [p.share for p in PRODUCT_BOOK]
    codes = [p.code for p in PRODUCT_BOOK]
    unknown = sorted(set(mix) - set(codes))
    if unknown:
        raise ValueError(f"product mix names unknown products {unknown}; the book's are {codes}")
    if any(not math.isfinite(share) or share < 0 for share in mix.values()):
        raise ValueError(f"product mix shares must be finite and not negative, got {dict(mix)}")
    total = sum(mix.values())
    if total <= 0:
        raise ValueError("product mix gives no product a share")
    return [mix.get(code, 0.0) / total for code in codes]


def parse_product_mix(text: str) -> dict[str, float]:
    """`CODE=SHARE,CODE=SHARE` (the command line's --product-mix) as a mapping."""
    mix: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        code, sep, share = item.partition("=")
        if not sep:
            raise ValueError(f"product mix item {item!r} is not CODE=SHARE")
        try:
            mix[code.strip()] = float(share)
        except ValueError:
            raise ValueError(f"product mix item {item!r}: {share!r} is not a number") from None
    product_shares(mix)
    return mix


def generate_landing(
    spark: SparkSession,
    loans: int,
    as_of: dt.date,
    seed: int,
    landing: Path,
    fmt: str = "parquet",
    *,
    bad_rows: float = 0.0,
    product_mix: Mapping[str, float] | None = None,
) -> dict[str, int]:
    """Write a sample loan book of `loans` loans as of `as_of` under `landing`; rows per table.

    Each landing table's folder is replaced. `spark` is not used: numpy and pyarrow on the driver
    generate faster than Spark would and keep the files byte-stable; the parameter keeps the
    command-line contract. `product_mix` (product code -> share of the loans, scaled to sum to 1;
    products not named get none) replaces the book's own mix (`PRODUCT_BOOK`): a bank whose book
    is mostly short consumer credit has far fewer instalments a loan than one with mortgages, whose
    10-25-year schedules are 6% of the default book's loans and 40% of its instalments.
    """
    del spark
    if loans < 1:
        raise ValueError(f"loans must be at least 1, got {loans}")
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"format must be parquet or csv, got {fmt!r}")
    if not 0.0 <= bad_rows < 1.0:
        raise ValueError(f"bad_rows must be a fraction in [0, 1), got {bad_rows}")
    if seed < 0:
        raise ValueError(f"seed must not be negative, got {seed}")
    shares = product_shares(product_mix)
    root = Path(landing)
    for table in LANDING_TABLES:
        shutil.rmtree(root / table.name, ignore_errors=True)
    day = _day(as_of)
    ref = _reference(seed, loans, day)
    counts = {table.name: 0 for table in LANDING_TABLES}
    for name, table in ref.tables.items():
        _write(table, root / name, "part-00000", fmt)
        counts[name] += table.num_rows
    checks = _channel_checks(ref, seed, day)
    _write(checks, root / "completed_inspections", "part-channels", fmt)
    counts["completed_inspections"] += checks.num_rows
    for chunk, first in enumerate(range(0, loans, CHUNK_LOANS)):
        tables = _chunk(ref, seed, chunk, first, min(CHUNK_LOANS, loans - first), day, shares)
        if bad_rows > 0:
            tables = _bad_rows(tables, bad_rows, _streams(seed, chunk)(99), chunk)
        for name, table in tables.items():
            _write(table, root / name, f"part-{chunk:05d}", fmt)
            counts[name] += table.num_rows
    return counts
