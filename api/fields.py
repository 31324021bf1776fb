"""A typed wrapper of `strawberry.field` for resolver methods (keeps mypy strict without a plugin)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import strawberry
from strawberry.permission import BasePermission

F = TypeVar("F", bound=Callable[..., Any])


def resolver(description: str, permission_classes: Sequence[type[BasePermission]] = ()) -> Callable[[F], F]:
    """`@strawberry.field(description=..., permission_classes=...)` on a resolver method."""
    decorator = strawberry.field(description=description, permission_classes=list(permission_classes))
    return cast(Callable[[F], F], decorator)
