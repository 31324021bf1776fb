"""Who is calling: HS256 JWTs (PyJWT) signed with a secret from the environment.

A token carries the caller's role (HQ or BRANCH), the branch a BRANCH caller is confined to, and
whether they may see personal data (`pii`). Row-level security and masking are decided from the
token alone, never from query arguments.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from api.settings import AuthSettings

Role = Literal["HQ", "BRANCH"]
ROLES: tuple[Role, ...] = ("HQ", "BRANCH")
ALGORITHM = "HS256"
MIN_SECRET_BYTES = 32


class AuthError(Exception):
    """The request carries no usable credentials (HTTP 401). The message never echoes the token."""


class SecretError(RuntimeError):
    """The signing secret is missing or too short: the server refuses to start."""


@dataclass(frozen=True)
class Caller:
    subject: str
    role: Role
    # BRANCH callers see only loans whose branch_path contains this branch; None for HQ.
    branch_id: str | None
    pii: bool

    @property
    def scope(self) -> str | None:
        """The branch whose subtree the caller may see; None = the whole bank."""
        return self.branch_id if self.role == "BRANCH" else None


def secret_from_env(settings: AuthSettings, environ: dict[str, str] | None = None) -> bytes:
    env = os.environ if environ is None else environ
    value = env.get(settings.secret_env, "")
    if not value:
        raise SecretError(f"set {settings.secret_env} to the JWT signing secret (at least {MIN_SECRET_BYTES} bytes)")
    secret = value.encode("utf-8")
    if len(secret) < MIN_SECRET_BYTES:
        raise SecretError(f"{settings.secret_env} is too short: HS256 needs at least {MIN_SECRET_BYTES} bytes")
    return secret


def issue_token(
    secret: bytes,
    settings: AuthSettings,
    role: Role,
    branch_id: str | None = None,
    pii: bool = False,
    subject: str | None = None,
    now: dt.datetime | None = None,
) -> str:
    """A signed token for `role` (BRANCH needs `branch_id`)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if role == "BRANCH" and not branch_id:
        raise ValueError("a BRANCH token needs a branch id")
    issued = now or dt.datetime.now(dt.UTC)
    claims: dict[str, Any] = {
        "sub": subject or (f"branch:{branch_id}" if role == "BRANCH" else "hq"),
        "role": role,
        "pii": bool(pii),
        "iss": settings.issuer,
        "aud": settings.audience,
        "iat": int(issued.timestamp()),
        "exp": int((issued + dt.timedelta(minutes=settings.token_minutes)).timestamp()),
    }
    if role == "BRANCH":
        claims["branch"] = branch_id
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def caller_from_header(header: str | None, secret: bytes, settings: AuthSettings) -> Caller:
    """The caller named by an `Authorization: Bearer <JWT>` header, or AuthError."""
    if not header:
        raise AuthError("missing Authorization header (expected: Bearer <token>)")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("Authorization header must be: Bearer <token>")
    try:
        claims = jwt.decode(
            token.strip(),
            secret,
            algorithms=[ALGORITHM],
            audience=settings.audience,
            issuer=settings.issuer,
            leeway=settings.leeway_seconds,
            options={"require": ["exp", "iat", "iss", "aud", "sub", "role"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"invalid token ({type(exc).__name__})") from None
    role = claims.get("role")
    if role not in ROLES:
        raise AuthError("invalid token (role must be HQ or BRANCH)")
    branch = claims.get("branch")
    if role == "BRANCH" and (not isinstance(branch, str) or not branch):
        raise AuthError("invalid token (a BRANCH token must name its branch)")
    pii = claims.get("pii", False)
    if not isinstance(pii, bool):
        raise AuthError("invalid token (pii must be true or false)")
    return Caller(
        subject=str(claims["sub"]),
        role=role,
        branch_id=branch if role == "BRANCH" else None,
        pii=pii,
    )
