"""Rule parameters resolved per (tier-1 branch, product), as columns a stage can join to its loans.

The sources leave many numbers to "the tier-1 branch" or "the product rules". Rather than branch
on them in Python, the batch builds one small table with a row per (tier1_branch_id, product_code)
holding every overridable scalar setting, and joins it (broadcast) to the loans. A stage then reads
a setting as a column: `param("classification", "technical_grace_days")`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.config import AppConfig, OverrideRule, overridable_sections, scalar_fields
from jobs.spark import local_frame

TIER1 = "tier1_branch_id"
PRODUCT = "product_code"


def param_name(section: str, name: str) -> str:
    return f"{section}__{name}"


def param(section: str, name: str) -> Column:
    """The column holding one resolved setting (after `with_params` has joined the table)."""
    return F.col(param_name(section, name))


def _spark_type(value: Any) -> T.DataType:
    if isinstance(value, bool):
        return T.BooleanType()
    if isinstance(value, int):
        return T.IntegerType()
    if isinstance(value, float):
        return T.DoubleType()
    if isinstance(value, Decimal):
        return T.DecimalType(18, 2)
    return T.StringType()


def _specificity(rule: OverrideRule) -> int:
    return (2 if rule.tier1_branch is not None else 0) + (1 if rule.product is not None else 0)


def resolve(config: AppConfig, tier1_branches: Iterable[str | None], products: Iterable[str]) -> list[dict[str, Any]]:
    """Settings for every (tier-1 branch, product) pair: the base, then overrides by specificity."""
    base: dict[str, Any] = {}
    sections = overridable_sections()
    for section, cls in sections.items():
        values = (
            config.profile
            if section == "classification"
            else config.delinquency
            if section == "delinquency"
            else config.section(section)
        )
        assert isinstance(values, cls)
        for name in scalar_fields(cls):
            base[param_name(section, name)] = getattr(values, name)
    rules = sorted(config.overrides, key=_specificity)
    rows = []
    for tier1 in sorted(set(tier1_branches), key=lambda v: v or ""):
        for product in sorted(set(products)):
            row = dict(base)
            for rule in rules:
                if rule.tier1_branch not in (None, tier1) or rule.product not in (None, product):
                    continue
                for dotted, value in rule.set.items():
                    section, _, name = dotted.partition(".")
                    row[param_name(section, name)] = value
            rows.append({TIER1: tier1, PRODUCT: product, **row})
    return rows


def params_frame(
    spark: SparkSession, config: AppConfig, tier1_branches: Iterable[str | None], products: Iterable[str]
) -> DataFrame:
    """The resolved settings as a small DataFrame keyed by tier1_branch_id and product_code."""
    rows = resolve(config, tier1_branches, products)
    sample = rows[0] if rows else resolve(config, [None], ["-"])[0]
    fields = [T.StructField(TIER1, T.StringType()), T.StructField(PRODUCT, T.StringType(), False)]
    fields += [T.StructField(k, _spark_type(v)) for k, v in sample.items() if k not in (TIER1, PRODUCT)]
    schema = T.StructType(fields)
    return local_frame(spark, [tuple(r[f.name] for f in fields) for r in rows], schema)


def with_params(params: DataFrame) -> Callable[[DataFrame], DataFrame]:
    """Join the resolved settings to loans carrying tier1_branch_id and product_code."""

    def transform(loans: DataFrame) -> DataFrame:
        # Null-safe on the tier-1 branch: a loan booked directly under head office has none.
        p = params.withColumnRenamed(TIER1, "_p_tier1").withColumnRenamed(PRODUCT, "_p_product")
        joined = loans.join(
            F.broadcast(p),
            loans[TIER1].eqNullSafe(p["_p_tier1"]) & (loans[PRODUCT] == p["_p_product"]),
            "left",
        )
        return joined.drop("_p_tier1", "_p_product")

    return transform
