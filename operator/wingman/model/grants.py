"""The ExecutionGrant phases both the operator and the gateway read (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wingman import conditions

Body = Mapping[str, Any]
TERMINAL = conditions.GRANT_TERMINAL


def phase(grant: Body) -> str:
    return str((grant.get("status") or {}).get("phase") or "Pending")


def is_terminal(grant: Body) -> bool:
    return phase(grant) in TERMINAL


__all__ = ["TERMINAL", "is_terminal", "phase"]
