"""The bounds the CRDs' schemas set on what a caller supplies (crds/, and the chart's copy).

One place for them: the client (``wingman.client.api``), the command line, the MCP server's
tool schemas and the chat service refuse a value past them before any call, naming the input,
the limit and what to do, instead of sending it to the API server's 422. A test reads the CRDs
and checks that these equal their ``maxLength``, ``maxItems``, ``minimum`` and ``maximum``.

Lengths are counted as the API server counts ``maxLength``: in Unicode code points (Python's
``len`` of a ``str``), not bytes; but a command (and a rollback) is bounded in bytes of UTF-8
too (``COMMAND_BYTES``), as the operator's scope check bounds it, which no CRD says.
"""

from __future__ import annotations

from collections.abc import Mapping

#: ApprovalRequest ``spec.environment``: its length and its pattern (1 to ``ENVIRONMENT``
#: lowercase letters, digits and '-', starting with a letter).
ENVIRONMENT = 31
ENVIRONMENT_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"
#: ApprovalRequest ``spec.instruction``.
INSTRUCTION = 2000
#: ApprovalRequest ``spec.justification``.
JUSTIFICATION = 2000
#: ApprovalRequest ``spec.commands``: how many (``maxItems``) and each one's length.
COMMANDS = 10
COMMAND = 4096
#: The most bytes of UTF-8 a command or a rollback may be: what the operator's scope check
#: accepts (``scope.MAX_COMMAND_BYTES``), past which a request the CRD took can never run.
COMMAND_BYTES = 4096
#: ApprovalRequest ``spec.rollbacks``: how many, and each ``command`` and ``rollback``.
ROLLBACKS = 10
ROLLBACK = 4096
#: ApprovalRequest ``spec.source``'s texts.
SOURCE: Mapping[str, int] = {"reference": 512, "agent": 253, "model": 253, "excerpt": 4000}
#: ApprovalRequest ``spec.decisions``: how many, and each one's ``reason``.
DECISIONS = 10
REASON = 1000
#: ApprovalRequest ``spec.expiresAfterSeconds`` (``minimum``, ``maximum``).
EXPIRES_AFTER_SECONDS = (60, 604800)
#: ExecutionGrant ``spec.ttlSeconds`` (``minimum``, ``maximum``).
TTL_SECONDS = (30, 3600)


#: What to do about a command or a rollback past ``COMMAND_BYTES``: only non-ASCII characters
#: (two to four bytes each) take it there, and a command runs only in plain ASCII.
COMMAND_BYTES_FIX = ("its non-ASCII characters take 2 to 4 bytes each, and a command runs only "
                     "in plain ASCII: retype it in plain ASCII")


def too_long(what: str, value: str | None, limit: int, fix: str) -> str | None:
    """Why ``value`` (named ``what``) cannot be sent: it is longer than ``limit`` characters,
    as the API server counts them; None when it fits. ``fix``: what to do."""
    if value is None or len(value) <= limit:
        return None
    return f"{what} is {len(value):,} characters; the limit is {limit:,}: {fix}"


def too_many_bytes(what: str, value: str | None, limit: int, fix: str) -> str | None:
    """Why ``value`` (named ``what``) cannot be sent: longer than ``limit`` bytes of UTF-8;
    None when it fits. ``fix``: what to do."""
    if value is None:
        return None
    size = len(value.encode("utf-8", "surrogatepass"))
    if size <= limit:
        return None
    return (f"{what} is {size:,} bytes of UTF-8 ({len(value):,} characters); the limit is "
            f"{limit:,} bytes: {fix}")


def out_of_range(what: str, value: int | None, bounds: tuple[int, int], fix: str
                 ) -> str | None:
    """Why the number ``value`` (named ``what``) cannot be sent: outside ``bounds``
    (inclusive); None when it is within them or not given."""
    low, high = bounds
    if value is None or low <= value <= high:
        return None
    return f"{what} is {value:,}; it must be {low:,} to {high:,}: {fix}"


__all__ = ["COMMAND", "COMMANDS", "COMMAND_BYTES", "COMMAND_BYTES_FIX", "DECISIONS",
           "ENVIRONMENT", "ENVIRONMENT_PATTERN", "EXPIRES_AFTER_SECONDS", "INSTRUCTION",
           "JUSTIFICATION", "REASON", "ROLLBACK", "ROLLBACKS", "SOURCE", "TTL_SECONDS",
           "out_of_range", "too_long", "too_many_bytes"]
