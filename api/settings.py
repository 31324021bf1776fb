"""API settings: conf/api.yaml parsed once into frozen dataclasses.

Parsing reuses the batch's strict converter (`jobs.config.build`): unknown keys, wrong types and
negative numbers are refused with the file, the key and the reason (`ConfigError`); the checks
below add the relations between values that a type cannot express.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from jobs.config import ConfigError, build

API_FILE = "api.yaml"


@dataclass(frozen=True)
class LakeSettings:
    poll_seconds: float = 5.0
    resident_dates: int = 3
    load_retry_seconds: float = 30.0
    load_in_child: bool = True
    loader_niceness: int = 19
    load_timeout_seconds: float = 900.0


@dataclass(frozen=True)
class Limits:
    max_depth: int = 10
    max_tokens: int = 2000
    max_aliases: int = 15
    max_page_size: int = 500
    default_page_size: int = 50
    max_list_size: int = 5000
    time_budget_ms: int = 3000
    max_body_bytes: int = 65536


@dataclass(frozen=True)
class AuthSettings:
    secret_env: str = "POSTLOAN_JWT_SECRET"
    issuer: str = "postloan"
    audience: str = "postloan-api"
    token_minutes: int = 480
    leeway_seconds: int = 30


# Keys whose values are personal data, compared case-, space- and punctuation-insensitively as
# substrings of a variable's key (so `name` covers `borrowerName`, `id_number` covers `idNumber`).
PERSONAL_KEYS: tuple[str, ...] = (
    "name",
    "id_number",
    "id_no",
    "id_card",
    "phone",
    "mobile",
    "email",
    "address",
    "birth",
)


@dataclass(frozen=True)
class AuditSettings:
    # One JSON line per GraphQL request on the `postloan.api.audit` logger (api/audit_log.py).
    enabled: bool = True
    personal_keys: tuple[str, ...] = PERSONAL_KEYS


@dataclass(frozen=True)
class ApiSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    path: str = "/graphql"
    graphiql: bool = False
    access_log: bool = False
    # Answers of identical requests on the same catalog are served from memory (0 = off).
    response_cache_mb: int = 64
    response_cache_warm_entries: int = 300
    # uvicorn worker processes; each loads the lake into its own memory.
    workers: int = 1
    lake: LakeSettings = field(default_factory=LakeSettings)
    limits: Limits = field(default_factory=Limits)
    auth: AuthSettings = field(default_factory=AuthSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)


def _check(settings: ApiSettings, file: Path) -> None:
    def refuse(key: str, reason: str) -> None:
        raise ConfigError(file, key, reason)

    if not 1 <= settings.port <= 65535:
        refuse("port", f"must be 1..65535, got {settings.port}")
    if not settings.path.startswith("/") or settings.path == "/":
        refuse("path", f"must start with / and name a route, got {settings.path!r}")
    if not settings.host:
        refuse("host", "must not be empty")
    if not 1 <= settings.workers <= 64:
        refuse("workers", f"must be 1..64, got {settings.workers}")
    if settings.lake.poll_seconds < 0.05:
        refuse("lake.poll_seconds", f"must be at least 0.05, got {settings.lake.poll_seconds}")
    if settings.lake.load_retry_seconds < 0:
        refuse("lake.load_retry_seconds", f"must not be negative, got {settings.lake.load_retry_seconds}")
    if settings.lake.resident_dates < 1:
        refuse("lake.resident_dates", "must be at least 1 (the latest business date is always resident)")
    if not 0 <= settings.lake.loader_niceness <= 19:
        refuse(
            "lake.loader_niceness",
            f"must be 0..19 (a CPU priority, 19 the lowest), got {settings.lake.loader_niceness}",
        )
    if settings.lake.load_timeout_seconds <= 0:
        refuse("lake.load_timeout_seconds", f"must be positive, got {settings.lake.load_timeout_seconds}")
    limits = settings.limits
    for name in ("max_depth", "max_tokens", "max_aliases", "max_page_size", "max_list_size", "time_budget_ms"):
        if getattr(limits, name) < 1:
            refuse(f"limits.{name}", f"must be at least 1, got {getattr(limits, name)}")
    if not 1 <= limits.default_page_size <= limits.max_page_size:
        refuse(
            "limits.default_page_size",
            f"must be between 1 and limits.max_page_size ({limits.max_page_size}), got {limits.default_page_size}",
        )
    if limits.max_body_bytes < 1024:
        refuse("limits.max_body_bytes", f"must be at least 1024, got {limits.max_body_bytes}")
    if not settings.auth.secret_env:
        refuse("auth.secret_env", "must name an environment variable")
    if settings.auth.token_minutes < 1:
        refuse("auth.token_minutes", "must be at least 1")
    if not settings.audit.personal_keys:
        refuse("audit.personal_keys", "must name at least one key (else personal data in variables is logged)")
    for i, key in enumerate(settings.audit.personal_keys):
        if not any(c.isalnum() for c in key):
            refuse(f"audit.personal_keys[{i}]", f"must contain a letter or digit, got {key!r}")


def load_api_settings(conf_dir: str | Path) -> ApiSettings:
    """Read conf/api.yaml (all defaults when the file is absent); refuse anything that does not fit."""
    file = Path(conf_dir) / API_FILE
    if not file.is_file():
        return ApiSettings()
    try:
        with file.open(encoding="utf-8") as handle:
            raw = yaml.safe_load(handle) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(file, "(file)", f"not valid YAML: {exc}") from None
    settings = build(ApiSettings, raw, file)
    _check(settings, file)
    return settings
