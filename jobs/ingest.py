"""Ingest: parse and validate landing rows; every row is accepted or quarantined with a reason.

Row-level faults never stop the run: bytes that are not UTF-8 (CSV), a value that does not parse,
a missing required value, an unknown enum value, a negative amount, a broken date order, a
duplicate key or an unknown reference sends the row to quarantine. A loan that is quarantined
takes its schedule, repayments and other child rows with it (reason LOAN_QUARANTINED), so no loan
is half-present.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, Observation, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.columns import sql_name, sql_string
from jobs.masking import mask_column
from schemas.base import MONEY, Table
from schemas.landing import (
    BORROWERS,
    BRANCH_LEVELS,
    BRANCHES,
    LANDING_TABLES,
    LOAN_CHILDREN,
    LOANS,
    MAX_AMOUNT_YUAN,
    NOT_UTF8,
    PRODUCTS,
    SCHEDULE,
)
from schemas.registry import landing_table

# A row's reasons are one text, "CODE:detail; CODE:detail", empty when the row is accepted: built
# with concat_ws, which skips the null (unmet) checks and stays in generated code, where an array of
# reason structs filtered with a lambda was interpreted row by row.
ACCEPTED = "_reasons"
SEPARATOR = "; "


def _reason(condition: str, code: str, detail: str) -> str:
    return f"CASE WHEN {condition} THEN {sql_string(f'{code}:{detail}')} END"


def is_accepted() -> Column:
    return F.col(ACCEPTED) == ""


def _delivered_as_contract(delivered: T.DataType, contract: T.DataType) -> bool:
    """A typed landing column (Parquet) already of the contract's type needs no parsing."""
    return delivered == contract and not isinstance(contract, T.StringType)


def _row_digest(names: Sequence[str]) -> str:
    """A digest of the row as delivered, telling identical copies from different rows.

    Spark's hash skips nulls, so a bitmask of the null columns goes in too: ("A", null) and
    (null, "A") must differ.
    """
    nulls = " + ".join(f"CASE WHEN {sql_name(c)} IS NULL THEN {1 << i} ELSE 0 END" for i, c in enumerate(names))
    return f"xxhash64({', '.join(sql_name(c) for c in names)}, {nulls or 0})"


# Spark's cast also reads "2026", "2026-06", "2026-01-15 junk" and years 0, -1 or 10000 (which a
# Python reader of the lake cannot hold) as dates: an ISO date only.
ISO_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([ T][0-9:.]+)?$"
# Spark's cast also reads "2026", a time alone (as today's date, so a rerun would differ), a zone
# offset (shifting a local time) and years 0 or 10000 as timestamps: a local ISO date and time only.
ISO_TIMESTAMP = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]{1,9})?)?$"
TRUE_TEXTS, FALSE_TEXTS = "('true', '1', 'y', 'yes')", "('false', '0', 'n', 'no')"


def parse(table: Table) -> Callable[[DataFrame], DataFrame]:
    """Cast raw columns to the contract's types; keep the raw record; collect per-row reasons.

    The checks are SQL text, one expression per output column: built from Column objects (3-4 Py4J
    round trips per function, about 40 per landing column) the plans of the fifteen tables' checks
    took 53,000 round trips, 4-6 s of the driver's time every night before any row was read; now
    7,300 (docs/benchmarks.md, "The driver's own time")."""

    def transform(raw: DataFrame) -> DataFrame:
        delivered = {f.name: f.dataType for f in raw.schema.fields}
        # Quarantine records show the row as delivered. A row that parsed cleanly and whose every
        # value reads back as its delivered text (a typed Parquet column always does) is rebuilt
        # from the parsed values (`_rejected`); only the others carry their raw values, so the
        # sorts and joins of the checks do not move every row twice over.
        sources = f"struct({', '.join(sql_name(c) for c in table.names)})"
        lossy: list[str] = []
        # Bytes that are not UTF-8 (io.check_utf8, io.decode_utf8) come first: the value is
        # unknown, so no other check of that column means anything (and the column parses as null).
        encoding: list[str] = []
        reasons: list[str] = []
        parsed: list[str] = []
        for c in table.columns:
            source = sql_name(c.name)
            readable = "true"
            if NOT_UTF8 in delivered:
                unreadable = f"coalesce(array_contains({sql_name(NOT_UTF8)}, {sql_string(c.name)}), false)"
                readable = f"(NOT {unreadable})"
                encoding.append(_reason(unreadable, "INVALID_ENCODING", c.name))
            if _delivered_as_contract(delivered[c.name], c.dtype):
                value = source
                blank = f"({source} IS NULL)"
                if isinstance(c.dtype, T.DateType):
                    # A Parquet date can hold years a Python reader of the lake cannot (0, 10000).
                    # Two comparisons, not BETWEEN: Spark 4 plans BETWEEN's operand as a common
                    # expression in a projection of its own, which tripled the loans' parse.
                    value = f"(CASE WHEN year({source}) >= 1 AND year({source}) <= 9999 THEN {source} END)"
                unparsable = f"({source} IS NOT NULL AND {value} IS NULL)"
            else:
                text = f"trim(CAST({source} AS STRING))"
                value = f"TRY_CAST(CASE WHEN {text} = '' THEN NULL ELSE {source} END AS {c.dtype.simpleString()})"
                if isinstance(c.dtype, T.DateType):
                    value = f"(CASE WHEN {text} RLIKE r'{ISO_DATE}' AND year({value}) >= 1 THEN {value} END)"
                if isinstance(c.dtype, T.TimestampType):
                    value = f"(CASE WHEN {text} RLIKE r'{ISO_TIMESTAMP}' AND year({value}) >= 1 THEN {value} END)"
                if isinstance(c.dtype, T.BooleanType):
                    lowered = f"lower({text})"
                    value = f"(CASE WHEN {lowered} IN {TRUE_TEXTS} THEN true WHEN {lowered} IN {FALSE_TEXTS} THEN false END)"
                blank = f"({source} IS NULL OR {text} = '')"
                unparsable = f"(NOT {blank} AND {value} IS NULL)"
                lossy.append(f"NOT (CAST({source} AS STRING) <=> CAST({value} AS STRING))")
            if NOT_UTF8 in delivered:
                value = f"(CASE WHEN {readable} THEN {value} END)"
                blank, unparsable = f"({readable} AND {blank})", f"({readable} AND {unparsable})"
            parsed.append(f"{value} AS {source}")
            if not c.nullable:
                code = "NULL_KEY" if c.name in table.key else "MISSING_VALUE"
                reasons.append(_reason(blank, code, c.name))
            reasons.append(_reason(unparsable, "UNPARSABLE_VALUE", c.name))
            if c.allowed:
                allowed = ", ".join(sql_string(v) for v in c.allowed)
                reasons.append(
                    _reason(f"({value} IS NOT NULL AND {value} NOT IN ({allowed}))", "INVALID_VALUE", c.name)
                )
            if c.non_negative:
                reasons.append(_reason(f"{value} < 0", "NEGATIVE_AMOUNT", c.name))
            if c.dtype == MONEY:
                # Two comparisons with a bound cast from an integer, which Spark holds as a long
                # like the column's values. Not abs (Spark's Decimal.abs compares with a zero of
                # another scale) and not a decimal literal (held as a java BigDecimal): either
                # takes every row's comparison through BigDecimal, three times slower.
                bound = f"CAST({MAX_AMOUNT_YUAN} AS {c.dtype.simpleString()})"
                out_of_range = f"({value} >= {bound} OR {value} <= -{bound})"
                reasons.append(_reason(out_of_range, "AMOUNT_OUT_OF_RANGE", c.name))
        verdict = f"concat_ws({sql_string(SEPARATOR)}, {', '.join([*encoding, *reasons])})"
        keep_raw = " OR ".join([f"{verdict} != ''", *lossy])
        return raw.selectExpr(
            *parsed,
            f"CASE WHEN {keep_raw} THEN {sources} END AS _src",
            f"{_row_digest(table.names)} AS _row_hash",
            f"{verdict} AS {ACCEPTED}",
        )

    return transform


def add_reason(condition: Column, code: str, detail: str) -> Callable[[DataFrame], DataFrame]:
    """Append a reason to rows meeting `condition` (null conditions count as not met)."""

    def transform(frame: DataFrame) -> DataFrame:
        hit = F.coalesce(condition, F.lit(False))
        reasons = F.col(ACCEPTED)
        extra = f"{code}:{detail}"
        appended = F.when(reasons == "", F.lit(extra)).otherwise(F.concat(reasons, F.lit(SEPARATOR + extra)))
        return frame.withColumn(ACCEPTED, F.when(hit, appended).otherwise(reasons))

    return transform


def flag_duplicates(table: Table) -> Callable[[DataFrame], DataFrame]:
    """Identical copies of a row: keep one, quarantine the rest (DUPLICATE_ROW). Different rows
    sharing a key: quarantine them all (DUPLICATE_KEY), since none can be trusted over another."""

    def transform(frame: DataFrame) -> DataFrame:
        if not table.key:
            return frame
        # One sort of the table by key and digest serves both questions: several digests under a
        # key (its first and last differ), and which copy of an identical row this is.
        by_key = Window.partitionBy(*table.key).orderBy("_row_hash")
        whole_key = by_key.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
        digests = F.when(F.min("_row_hash").over(whole_key) == F.max("_row_hash").over(whole_key), 1).otherwise(2)
        keyed = frame.withColumn("_versions", digests).withColumn("_copy", F.row_number().over(by_key))
        key_present = F.lit(True)
        for k in table.key:
            key_present = key_present & F.col(k).isNotNull()
        return (
            keyed.transform(add_reason(key_present & (F.col("_versions") > 1), "DUPLICATE_KEY", ",".join(table.key)))
            .transform(
                add_reason(
                    key_present & (F.col("_versions") == 1) & (F.col("_copy") > 1), "DUPLICATE_ROW", ",".join(table.key)
                )
            )
            .drop("_versions", "_copy")
        )

    return transform


def require_reference(column: str, valid: DataFrame, valid_column: str, code: str) -> Callable[[DataFrame], DataFrame]:
    """Rows whose non-null `column` is not among `valid[valid_column]` get reason `code`."""

    def transform(frame: DataFrame) -> DataFrame:
        known = valid.select(F.col(valid_column).alias("_ref"), F.lit(True).alias("_known")).distinct()
        joined = frame.join(known, frame[column] == known["_ref"], "left")
        return joined.transform(add_reason(F.col(column).isNotNull() & F.col("_known").isNull(), code, column)).drop(
            "_ref", "_known"
        )

    return transform


def by_loan(frame: DataFrame) -> DataFrame:
    """Hash-partition rows by loan_id into the session's shuffle partitions.

    A fixed count, which adaptive execution does not coalesce, so that the loan status the child
    rows are joined to is shuffled to match them rather than the other way round.
    """
    partitions = int(frame.sparkSession.conf.get("spark.sql.shuffle.partitions") or 200)
    return frame.repartition(partitions, "loan_id")


@dataclass(frozen=True)
class Ingested:
    """Every landing row, parsed and checked; accepted rows have no reasons."""

    checked: dict[str, DataFrame]
    run_id: str
    as_of: dt.date
    # Rows and accepted rows of each table, counted while it was settled (only when `ingest` was
    # given `keep`); `checked_counts` counts the checked rows otherwise.
    observed: dict[str, Observation] = field(default_factory=dict)

    def accepted(self, name: str) -> DataFrame:
        """Accepted rows of a landing table: the contract's columns and types."""
        return _accepted(self.checked[name], landing_table(name))

    @property
    def tables(self) -> dict[str, DataFrame]:
        return {t.name: self.accepted(t.name) for t in LANDING_TABLES}

    def quarantine(self) -> DataFrame:
        """Refused rows of every table, as rows of the quarantine table."""
        # A table counted with no refused rows (most of them, most nights) is not read again.
        refusing = [t for t in LANDING_TABLES if t.name not in self.observed or checked_counts(self, t.name)[1]]
        frames = [_rejected(self.checked[t.name], t, self.run_id, self.as_of) for t in refusing or [BRANCHES]]
        result = frames[0]
        for frame in frames[1:]:
            result = result.unionByName(frame)
        return result


def _accepted(frame: DataFrame, table: Table) -> DataFrame:
    return frame.where(is_accepted()).select(*table.names)


def _rejected(frame: DataFrame, table: Table, run_id: str, as_of: dt.date) -> DataFrame:
    def src(name: str) -> Column:
        # No raw values kept: the row parsed cleanly and its values read back as delivered.
        return F.when(F.col("_src").isNull(), F.col(name).cast("string")).otherwise(
            F.col("_src").getField(name).cast("string")
        )

    key = F.concat_ws("|", *[src(k) for k in table.key]) if table.key else F.lit(None)
    masked = F.to_json(
        F.struct(*[(mask_column(c.name, src(c.name)) if c.pii else src(c.name)).alias(c.name) for c in table.columns]),
        {"ignoreNullFields": "false"},
    )
    unmasked = F.to_json(F.struct(*[src(c).alias(c) for c in table.names]), {"ignoreNullFields": "false"})
    occurrence = F.row_number().over(Window.partitionBy("_row_hash").orderBy("_row_hash"))
    return frame.where(~is_accepted()).select(
        F.lit(as_of).alias("as_of_date"),
        F.lit(run_id).alias("run_id"),
        F.lit(table.name).alias("source_table"),
        F.substring_index(ACCEPTED, ":", 1).alias("reason_code"),
        F.col(ACCEPTED).alias("reason_detail"),
        key.alias("record_key"),
        masked.alias("raw_record"),
        # Identical copies of a row get the same digest; the occurrence number keeps them apart.
        F.sha2(F.concat_ws("\u0001", F.lit(table.name), unmasked, occurrence.cast("string")), 256).alias("row_hash"),
    )


def ingest(
    raw: dict[str, DataFrame],
    run_id: str,
    as_of: dt.date,
    keep: Callable[[DataFrame], DataFrame] | None = None,
    keep_by_loan: Callable[[DataFrame], DataFrame] | None = None,
) -> Ingested:
    """Validate every landing table: dimensions first, then loans, then loan children.

    `keep` is applied to each table once its checks are complete (the pipeline caches there), so
    the checks of later tables reuse the earlier tables' results instead of recomputing them.
    `keep_by_loan`, if given, is applied to the loan children instead: they leave ingest
    hash-partitioned by loan_id, which the pipeline keeps for the delinquency's windows by loan.
    """
    hold = keep or (lambda frame: frame)
    hold_by_loan = keep_by_loan or hold
    children = {c.name for c in LOAN_CHILDREN}

    def checks(table: Table) -> DataFrame:
        frame = raw[table.name].transform(parse(table))
        if table.name not in children:
            return frame.transform(flag_duplicates(table))
        # A loan's child rows are checked against their loan: moved once, by loan_id, the duplicate
        # check of a key under the loan (the schedule's loan_id, installment_no) and the join to the
        # loans share that one shuffle, where the 28M instalments of a 1M-loan book were shuffled
        # twice (by the key, then by loan).
        if table.key[:1] == ("loan_id",):
            return frame.transform(by_loan).transform(flag_duplicates(table))
        return frame.transform(flag_duplicates(table)).transform(by_loan)

    checked: dict[str, DataFrame] = {t.name: checks(t) for t in LANDING_TABLES}

    observed: dict[str, Observation] = {}

    def finish(table: Table) -> DataFrame:
        # Accepted rows drop their raw text before caching; refused rows keep it for quarantine.
        frame = checked[table.name].withColumn("_src", F.when(~is_accepted(), F.col("_src")))
        if keep is not None:
            # Counted as the rows are settled, instead of reading a 28M-row table back to count it.
            observed[table.name] = Observation(f"ingest_{table.name}")
            frame = frame.observe(observed[table.name], *_counts())
        checked[table.name] = (hold_by_loan if table.name in children else hold)(frame)
        return checked[table.name]

    def accepted(table: Table) -> DataFrame:
        return _accepted(checked[table.name], table)

    # A parent must be an accepted branch: refused branches take their subtree with them, one
    # level of the hierarchy per pass. Each pass reads the one before twice, so unkept the plan
    # doubled per level (34 scans of the landing file and its duplicate check at four levels,
    # 4 s of planning on a 1M-loan night for a table of a few hundred rows).
    branches = hold(checked[BRANCHES.name])
    valid = branches.where(is_accepted()).select("branch_id", "parent_id")
    for _ in BRANCH_LEVELS:
        parents = valid.select(F.col("branch_id").alias("_up"))
        valid = hold(
            valid.join(parents, valid["parent_id"] == parents["_up"], "left")
            .where(F.col("parent_id").isNull() | F.col("_up").isNotNull())
            .drop("_up")
        )
    checked[BRANCHES.name] = branches.transform(require_reference("parent_id", valid, "branch_id", "UNKNOWN_REFERENCE"))
    dependent = {LOANS.name, *(c.name for c in LOAN_CHILDREN)}
    for table in LANDING_TABLES:
        if table.name not in dependent:
            finish(table)
    checked[LOANS.name] = (
        checked[LOANS.name]
        .transform(require_reference("branch_id", accepted(BRANCHES), "branch_id", "UNKNOWN_REFERENCE"))
        .transform(require_reference("product_code", accepted(PRODUCTS), "product_code", "UNKNOWN_REFERENCE"))
        .transform(require_reference("borrower_id", accepted(BORROWERS), "borrower_id", "UNKNOWN_REFERENCE"))
        .transform(add_reason(F.col("principal") == 0, "NON_POSITIVE_PRINCIPAL", "principal"))
        .transform(
            add_reason(
                F.col("maturity_date") < F.col("disbursement_date"), "MATURITY_BEFORE_DISBURSEMENT", "maturity_date"
            )
        )
        .transform(
            add_reason((F.col("status") != "ACTIVE") & F.col("closed_date").isNull(), "MISSING_VALUE", "closed_date")
        )
        .transform(
            add_reason(F.col("closed_date") < F.col("disbursement_date"), "CLOSED_BEFORE_DISBURSEMENT", "closed_date")
        )
    )
    loans = finish(LOANS)
    # One row per delivered loan id: whether a copy was accepted, and its disbursement date. One
    # join per child table answers both "unknown" and "quarantined". Kept once, by loan and in
    # loan order, as the children arrive: each of the eight joins then reads it where it lies,
    # where each aggregated, shuffled and sorted every loan of the book again (a 29k-row table's
    # checks took 12 s of a 10M-loan night for that alone).
    loan_status = hold_by_loan(
        loans.where(F.col("loan_id").isNotNull())
        .groupBy(F.col("loan_id").alias("_seen"))
        .agg(
            F.max(is_accepted()).alias("_good"),
            F.max(F.when(is_accepted(), F.col("disbursement_date"))).alias("disbursement_date"),
        )
        .sortWithinPartitions("_seen")
    )
    for child in LOAN_CHILDREN:
        frame = checked[child.name]
        frame = (
            frame.join(loan_status, frame["loan_id"] == loan_status["_seen"], "left")
            .transform(add_reason(F.col("loan_id").isNotNull() & ~F.col("_good"), "LOAN_QUARANTINED", "loan_id"))
            .transform(add_reason(F.col("loan_id").isNotNull() & F.col("_seen").isNull(), "UNKNOWN_LOAN", "loan_id"))
        )
        if child is SCHEDULE:
            frame = frame.transform(
                add_reason(F.col("due_date") < F.col("disbursement_date"), "DUE_BEFORE_DISBURSEMENT", "due_date")
            )
        checked[child.name] = frame.drop("_good", "_seen", "disbursement_date")
        finish(child)
    return Ingested(checked=checked, run_id=run_id, as_of=as_of, observed=observed)


def _counts() -> tuple[Column, Column]:
    return F.count(F.lit(1)).alias("rows"), F.sum(is_accepted().cast("long")).alias("accepted")


def checked_counts(ingested: Ingested, name: str) -> tuple[int, int]:
    """(accepted, quarantined) rows of one table: as counted when it was settled, or in one pass."""
    if name in ingested.observed:
        counted = ingested.observed[name].get
        rows, accepted = int(counted["rows"]), int(counted["accepted"] or 0)
    else:
        row = ingested.checked[name].agg(*_counts()).first()
        rows, accepted = (int(row["rows"]), int(row["accepted"] or 0)) if row else (0, 0)
    return accepted, rows - accepted


def unreconciled(
    input_rows: dict[str, int], accepted_rows: dict[str, int], quarantined_rows: dict[str, int]
) -> list[str]:
    """Tables whose input rows are not exactly accepted + quarantined (must be none)."""
    return [name for name, n in input_rows.items() if n != accepted_rows.get(name, 0) + quarantined_rows.get(name, 0)]
