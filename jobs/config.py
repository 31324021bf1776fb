"""Configuration: YAML under conf/, parsed once into frozen dataclasses.

A bad file is refused with the file, the key and what is wrong (`ConfigError`). Rule parameters
that a tier-1 branch or a product may change are the scalar fields of the `OVERRIDABLE` sections;
`overrides` in postloan.yaml sets them per tier-1 branch, per product, or per both.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

RiskClass = Literal["NORMAL", "SPECIAL_MENTION", "SUBSTANDARD", "DOUBTFUL", "LOSS"]
RISK_CLASS_ORDER: tuple[str, ...] = ("NORMAL", "SPECIAL_MENTION", "SUBSTANDARD", "DOUBTFUL", "LOSS")


class ConfigError(ValueError):
    """A configuration file that cannot be used: names the file, the key and the reason."""

    def __init__(self, file: str | Path, key: str, reason: str) -> None:
        self.file, self.key, self.reason = str(file), key, reason
        super().__init__(f"{file}: {key}: {reason}")


# --------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True)
class DelinquencyConfig:
    """DOMAIN.md section 1."""

    # An instalment counts as covered when less than this amount of it is unpaid.
    tolerance_amount: Decimal = Decimal("0.00")
    # First-payment default: the first instalment went more than this many days past due.
    fpd_days: int = 30
    # Buckets: M0 = 0, then bucket_width_days-wide buckets M1..M{bucket_count}, then M{n+1}+.
    bucket_width_days: int = 30
    bucket_count: int = 6


@dataclass(frozen=True)
class GradeRule:
    """One sub-grade of a class: the first rule whose limits all hold gives the grade."""

    grade: str
    max_dpd: int | None = None
    max_dpd_ever: int | None = None
    collateral_types: tuple[str, ...] = ()
    no_signal: bool = False


@dataclass(frozen=True)
class ClassificationProfile:
    """A named rule set (DOMAIN.md section 2). Every threshold is configuration."""

    name: str
    description: str
    # DPD floors: a loan with dpd above the number is at least the class.
    dpd_special_mention_above: int
    dpd_substandard_above: int
    dpd_doubtful_above: int
    dpd_loss_above: int
    # Technical overdue (技術性逾期): dpd up to this stays NORMAL as far as DPD is concerned.
    technical_grace_days: int = 0
    # Risk-signal floors by signal type; types not listed set no floor.
    signal_floors: Mapping[str, RiskClass] = field(default_factory=dict)
    other_bank_overdue_min_days: int = 30
    # Death, disappearance or lost capacity: floor without / with an estate to recover from.
    no_estate_floor: RiskClass = "LOSS"
    with_estate_floor: RiskClass = "SUBSTANDARD"
    # Restructuring (重組) observation period.
    restructure_floor: RiskClass = "SPECIAL_MENTION"
    restructure_npl_floor: RiskClass = "SUBSTANDARD"
    observation_min_periods: int = 2
    observation_min_months: int = 12
    # Upgrade out of NPL: arrears repaid, then normal payment for the longer of these.
    upgrade_min_periods: int = 2
    upgrade_min_months: int = 6
    # Manual overrides may lift a loan at most this many classes above the rule result,
    # and never out of NPL while dpd is above dpd_substandard_above (when the flag is set).
    override_max_upgrade_notches: int = 1
    override_keeps_npl_dpd_floor: bool = True
    grades: Mapping[RiskClass, tuple[GradeRule, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class OverrideRule:
    """Parameter values for one tier-1 branch, one product, or one pair of them."""

    tier1_branch: str | None = None
    product: str | None = None
    set: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SparkSettings:
    master: str | None = "local[2]"
    app_name: str = "postloan-nightly"
    conf: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LogSettings:
    """The run's event log: JSON lines, one object per event (docs/operations.md)."""

    # Appended to (folder created) when set, relative to the working directory; stderr when empty.
    file: str | None = None
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


@dataclass(frozen=True)
class LayoutSettings:
    """How a night's rows are cut into files: a few well-sized files per table and date."""

    # Delta optimized writes: one extra shuffle bins the date's rows into files near the bin size
    # (spark.databricks.delta.optimizeWrite.binSize) instead of one file per upstream partition.
    optimize_write: bool = True
    # A cap that holds with or without optimized writes.
    max_records_per_file: int = 5_000_000
    # Rows per Parquet row group of a table written sorted (loan_snapshot, classification_history):
    # a per-loan lookup reads one row group, so smaller is a faster lookup; much smaller costs
    # compression and footer size (each row group has its own statistics in the footer).
    sorted_row_group_rows: int = 16_384
    # The columns Delta keeps per-file min/max statistics on, in each table that has them
    # (delta.dataSkippingStatsColumns): those the API and BI filter on within a date, which Z-order
    # needs too. On the other columns they skip nothing (a date's few files each hold a range of
    # loan ids, or a mix, so their min and max span the date) and collecting them was a quarter of
    # the CPU of writing a file.
    statistics_columns: tuple[str, ...] = (
        "loan_id",
        "borrower_id",
        "branch_id",
        "tier1_branch_id",
        "product_code",
        "agency_id",
        "source_table",
        "reason_code",
    )

    def __post_init__(self) -> None:
        if self.max_records_per_file < 1:
            raise ValueError("max_records_per_file must be at least 1")
        if self.sorted_row_group_rows < 1:
            raise ValueError("sorted_row_group_rows must be at least 1")
        if not self.statistics_columns:
            raise ValueError("statistics_columns must name at least one column")


@dataclass(frozen=True)
class MaintenanceSettings:
    """`postloan maintain`: OPTIMIZE (Z-order) the recent dates, re-pin, VACUUM (docs/operations.md)."""

    # OPTIMIZE the dates served within this many days before the newest served date.
    optimize_recent_days: int = 35
    # Z-order columns per table: the columns the API and BI filter on within a date.
    zorder_by: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # VACUUM deletes files unreferenced for longer than this (delta.deletedFileRetentionDuration):
    # the longest a reader may hold an older version (an API request, a BI query).
    deleted_file_retention_hours: int = 168
    # Delta commits kept (delta.logRetentionDuration): a ledger-pinned version older than this can
    # no longer be read. The metrics read a year of history at pinned versions, hence over a year.
    log_retention_days: int = 400
    # A date whose pinned versions are this old is re-pinned to the current versions (same files).
    repin_after_days: int = 300

    def __post_init__(self) -> None:
        if self.repin_after_days <= self.optimize_recent_days:
            raise ValueError(
                f"maintenance.repin_after_days ({self.repin_after_days}) must be above "
                f"maintenance.optimize_recent_days ({self.optimize_recent_days})"
            )
        if self.repin_after_days >= self.log_retention_days:
            raise ValueError(
                f"maintenance.repin_after_days ({self.repin_after_days}) must be below "
                f"maintenance.log_retention_days ({self.log_retention_days}): pins must move before their log goes"
            )


@dataclass(frozen=True)
class ProcessSettings:
    """How the batch's processes share the host with others (docs/operations.md)."""

    # Unix niceness of `postloan nightly` / `backfill` and the Spark JVM and workers it starts:
    # 19 yields the CPU to anything interactive on the host (the API) and costs nothing when the
    # batch runs alone, since an idle CPU goes to whoever asks. 0 leaves the priority as started.
    niceness: int = 19

    def __post_init__(self) -> None:
        if not 0 <= self.niceness <= 19:
            raise ValueError("niceness must be between 0 and 19")


@dataclass(frozen=True)
class OperationsConfig:
    """conf/operations.yaml: how the job runs, not what it computes (not part of config_hash)."""

    log: LogSettings = field(default_factory=LogSettings)
    process: ProcessSettings = field(default_factory=ProcessSettings)
    layout: LayoutSettings = field(default_factory=LayoutSettings)
    maintenance: MaintenanceSettings = field(default_factory=MaintenanceSettings)

    def table_properties(self) -> dict[str, str]:
        """Retention properties every lake table is created with (and `maintain` keeps set)."""
        m = self.maintenance
        return {
            "delta.logRetentionDuration": f"interval {m.log_retention_days} days",
            "delta.deletedFileRetentionDuration": f"interval {m.deleted_file_retention_hours} hours",
        }


@dataclass(frozen=True)
class AppConfig:
    """Everything a run needs, parsed and checked. Pass plain values from it into the stages."""

    profile: ClassificationProfile
    delinquency: DelinquencyConfig
    overrides: tuple[OverrideRule, ...]
    holidays: tuple[dt.date, ...]
    spark: SparkSettings
    sections: Mapping[str, Any] = field(default_factory=dict)
    source_hash: str = ""
    operations: OperationsConfig = field(default_factory=OperationsConfig)

    def section(self, name: str) -> Any:
        return self.sections[name]


# Sections whose scalar fields a tier-1 branch or product may override.
OVERRIDABLE: dict[str, type] = {"delinquency": DelinquencyConfig, "classification": ClassificationProfile}


def _extra_sections() -> dict[str, type]:
    from jobs.sections import SECTIONS

    return SECTIONS


# --------------------------------------------------------------------------------------------
# Generic, strict conversion from YAML values to the dataclasses above

T = TypeVar("T")


def _convert(value: Any, hint: Any, file: Path, key: str) -> Any:
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if value is None:
            if type(None) in get_args(hint):
                return None
            raise ConfigError(file, key, "must not be empty")
        return _convert(value, args[0], file, key)
    if value is None:
        raise ConfigError(file, key, "must not be empty")
    if origin is Literal:
        if value not in get_args(hint):
            raise ConfigError(file, key, f"{value!r} is not one of {', '.join(map(str, get_args(hint)))}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(file, key, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(file, key, f"expected a whole number, got {value!r}")
        if value < 0:
            raise ConfigError(file, key, f"must not be negative, got {value}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(file, key, f"expected a number, got {value!r}")
        return float(value)
    if hint is Decimal:
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise ConfigError(file, key, f"expected an amount, got {value!r}") from None
        if not number.is_finite() or number < 0 or isinstance(value, bool):
            raise ConfigError(file, key, f"expected a non-negative amount, got {value!r}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(file, key, f"expected text, got {value!r}")
        return value
    if hint is dt.date:
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError:
            raise ConfigError(file, key, f"expected a date YYYY-MM-DD, got {value!r}") from None
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(file, key, f"expected a list, got {value!r}")
        item = get_args(hint)[0]
        return tuple(_convert(v, item, file, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict, typing.Mapping):
        if not isinstance(value, dict):
            raise ConfigError(file, key, f"expected a mapping, got {value!r}")
        key_hint, value_hint = get_args(hint)
        return {
            _convert(k, key_hint, file, f"{key}.{k}"): _convert(v, value_hint, file, f"{key}.{k}")
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return build(hint, value, file, key)
    raise ConfigError(file, key, f"unsupported setting type {hint}")


def build(cls: type[T], data: Any, file: Path, prefix: str = "") -> T:
    """Build dataclass `cls` from a YAML mapping, refusing unknown keys and wrong types."""
    where = prefix or "(top level)"
    if not isinstance(data, dict):
        raise ConfigError(file, where, f"expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for name in data:
        if name not in known:
            raise ConfigError(file, f"{prefix}.{name}".lstrip("."), f"unknown key (known: {', '.join(known)})")
    values: dict[str, Any] = {}
    for name, f in known.items():
        key = f"{prefix}.{name}".lstrip(".")
        if name in data:
            values[name] = _convert(data[name], hints[name], file, key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(file, key, "is required")
    try:
        return cls(**values)
    except ConfigError:
        raise
    except ValueError as exc:  # the section's own checks (__post_init__)
        raise ConfigError(file, where, str(exc)) from None


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(path, "(file)", "not found")
    try:
        with path.open(encoding="utf-8") as handle:
            return yaml.safe_load(handle) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(path, "(file)", f"not valid YAML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, "(file)", f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None


def scalar_fields(cls: type) -> dict[str, Any]:
    """The overridable (scalar) fields of a section and their type hints."""
    hints = get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = [a for a in get_args(hint) if a is not type(None)] or [hint]
        base = args[0] if get_origin(hint) in (typing.Union, types.UnionType) else hint
        if base in (int, float, str, bool, Decimal) or get_origin(base) is Literal:
            out[f.name] = hint
    return out


def overridable_sections() -> dict[str, type]:
    return {**OVERRIDABLE, **_extra_sections()}


def _check_override(raw: Any, file: Path, index: int) -> OverrideRule:
    rule = build(OverrideRule, raw, file, f"overrides[{index}]")
    if rule.tier1_branch is None and rule.product is None:
        raise ConfigError(file, f"overrides[{index}]", "names neither tier1_branch nor product")
    sections = overridable_sections()
    checked: dict[str, Any] = {}
    for dotted, value in rule.set.items():
        key = f"overrides[{index}].set.{dotted}"
        section, _, name = str(dotted).partition(".")
        if section not in sections:
            raise ConfigError(file, key, f"unknown section (overridable: {', '.join(sections)})")
        fields = scalar_fields(sections[section])
        if name not in fields:
            raise ConfigError(file, key, f"not an overridable setting (choose from: {', '.join(fields)})")
        checked[dotted] = _convert(value, fields[name], file, key)
    return OverrideRule(rule.tier1_branch, rule.product, checked)


def load_config(conf_dir: str | Path, profile: str | None = None, spark_profile: str | None = None) -> AppConfig:
    """Read conf/postloan.yaml and the files it names; refuse anything that does not fit.

    `profile` and `spark_profile` replace the rule profile and the Spark settings file the conf
    names, so one reviewed conf folder serves a local run and a spark-submit alike.
    """
    root = Path(conf_dir)
    main_file = root / "postloan.yaml"
    raw = _read_yaml(main_file)
    if not isinstance(raw, dict):
        raise ConfigError(main_file, "(top level)", "expected a mapping")
    extra = _extra_sections()
    allowed = {"profile", "delinquency", "overrides", "holidays_file", "spark", *extra}
    for name in raw:
        if name not in allowed:
            raise ConfigError(main_file, str(name), f"unknown key (known: {', '.join(sorted(allowed))})")

    profile_name = profile or raw.get("profile", "cbirc_2023")
    if not isinstance(profile_name, str):
        raise ConfigError(main_file, "profile", "expected a profile name")
    profile_file = root / "profiles" / f"{profile_name}.yaml"
    if not profile_file.is_file():
        raise ConfigError(main_file, "profile", f"no rule profile {profile_name!r} in {root / 'profiles'}")
    rule_profile = build(ClassificationProfile, _read_yaml(profile_file), profile_file)
    _check_profile(rule_profile, profile_file)

    delinquency = build(DelinquencyConfig, raw.get("delinquency", {}), main_file, "delinquency")
    overrides_raw = raw.get("overrides", []) or []
    if not isinstance(overrides_raw, list):
        raise ConfigError(main_file, "overrides", "expected a list")
    overrides = tuple(_check_override(o, main_file, i) for i, o in enumerate(overrides_raw))

    holidays: tuple[dt.date, ...] = ()
    holidays_name = raw.get("holidays_file")
    if holidays_name is not None:
        holidays_file = root / str(holidays_name)
        holidays_raw = _read_yaml(holidays_file)
        if not isinstance(holidays_raw, dict) or "holidays" not in holidays_raw:
            raise ConfigError(holidays_file, "holidays", "is required (a list of dates)")
        holidays = tuple(sorted(_convert(holidays_raw["holidays"], tuple[dt.date, ...], holidays_file, "holidays")))

    spark_name = spark_profile or raw.get("spark", "local")
    if not isinstance(spark_name, str):
        raise ConfigError(main_file, "spark", "expected a Spark settings name")
    spark_file = root / "spark" / f"{spark_name}.yaml"
    if not spark_file.is_file():
        raise ConfigError(main_file, "spark", f"no Spark settings {spark_name!r} in {root / 'spark'}")
    spark = build(SparkSettings, _read_yaml(spark_file), spark_file)

    # A stage's section may sit in postloan.yaml or in a file of its own, conf/<section>.yaml.
    sections: dict[str, Any] = {}
    for name, cls in extra.items():
        own_file = root / f"{name}.yaml"
        if own_file.is_file():
            if name in raw:
                raise ConfigError(main_file, name, f"also set in {own_file.name}; keep one")
            sections[name] = build(cls, _read_yaml(own_file), own_file)
        else:
            sections[name] = build(cls, raw.get(name, {}) or {}, main_file, name)
    operations = load_operations(root)
    # The hash names the rules a run applied; the API's settings and operations are not rules.
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*.yaml") if p.relative_to(root).as_posix() not in NOT_RULES):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    # The Spark settings chosen are left out: a run on a cluster applies the rules a local run does.
    digest.update(json.dumps({"profile": profile_name}).encode())
    return AppConfig(
        profile=rule_profile,
        delinquency=delinquency,
        overrides=overrides,
        holidays=holidays,
        spark=spark,
        sections=sections,
        source_hash=digest.hexdigest(),
        operations=operations,
    )


# Files under conf/ that say how to run and serve, not what to compute.
NOT_RULES = frozenset({"api.yaml", "operations.yaml"})


def load_operations(conf_dir: str | Path) -> OperationsConfig:
    """conf/operations.yaml (all defaults when absent); Z-order columns checked against the contracts."""
    from schemas.registry import LAKE_TABLES

    path = Path(conf_dir) / "operations.yaml"
    operations = build(OperationsConfig, _read_yaml(path), path) if path.is_file() else OperationsConfig()
    tables = {t.name: t for t in LAKE_TABLES}
    for column in operations.layout.statistics_columns:
        key = "layout.statistics_columns"
        holders = [t for t in LAKE_TABLES if t.partition_by and column in t.names and column not in t.partition_by]
        if not holders:
            raise ConfigError(path, key, f"{column!r} is not a column of any date-partitioned lake table")
        for holder in holders:
            dtype = holder.column(column).dtype.simpleString()
            if dtype.startswith(("array", "map", "struct")):
                raise ConfigError(path, key, f"{holder.name}.{column} is {dtype}: statistics need a plain column")
    for name, columns in operations.maintenance.zorder_by.items():
        key = f"maintenance.zorder_by.{name}"
        table = tables.get(name)
        if table is None or not table.partition_by:
            dated = ", ".join(t for t, c in tables.items() if c.partition_by)
            raise ConfigError(path, key, f"not a date-partitioned lake table (choose from: {dated})")
        if table.sort_by:
            raise ConfigError(
                path,
                key,
                f"{name} is written sorted by {', '.join(table.sort_by)} each night and not optimized"
                " (a Z-order would undo the order its per-loan reads rely on)",
            )
        if not columns:
            raise ConfigError(path, key, "name at least one column")
        for column in columns:
            if column not in table.names:
                raise ConfigError(path, key, f"{name} has no column {column!r}")
            if column in table.partition_by:
                raise ConfigError(path, key, f"{column} is the partition column: each date is optimized on its own")
            # Z-ordering clusters files by the min/max statistics of its columns: Delta refuses to
            # Z-order on a column it keeps none for.
            if column not in operations.layout.statistics_columns:
                raise ConfigError(path, key, f"{column} is not among layout.statistics_columns")
            dtype = table.column(column).dtype.simpleString()
            if dtype.startswith(("array", "map", "struct")):
                raise ConfigError(path, key, f"{column} is {dtype}: Z-order needs a plain column")
    return operations


def _check_profile(p: ClassificationProfile, file: Path) -> None:
    thresholds = [
        ("dpd_special_mention_above", p.dpd_special_mention_above),
        ("dpd_substandard_above", p.dpd_substandard_above),
        ("dpd_doubtful_above", p.dpd_doubtful_above),
        ("dpd_loss_above", p.dpd_loss_above),
    ]
    for (name_a, a), (name_b, b) in itertools.pairwise(thresholds):
        if a >= b:
            raise ConfigError(file, name_b, f"must be above {name_a} ({a}), got {b}")
    if p.technical_grace_days > 7:
        raise ConfigError(file, "technical_grace_days", "technical overdue grace is at most 7 days")
    for risk_class, rules in p.grades.items():
        if not rules:
            raise ConfigError(file, f"grades.{risk_class}", "needs at least one grade")
        if any(
            r.max_dpd is not None or r.max_dpd_ever is not None or r.collateral_types or r.no_signal for r in rules[-1:]
        ):
            raise ConfigError(file, f"grades.{risk_class}", "the last grade must have no conditions (catch-all)")
