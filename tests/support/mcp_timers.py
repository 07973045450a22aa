"""``wingman`` as a process with the MCP server's connection timers set short.

The HTTP server's timers (``HEAD_SECONDS``, ``BODY_SECONDS``, ``STALL_SECONDS`` of
``wingman.mcp.server``, read each time it times a connection, and ``REFUSAL_LOG_SECONDS``,
read as its log limiters are made) are module constants with production values of 10 to
30 s: a test of one of them runs the server with that constant set to a few seconds, and
checks the same behaviour against the value it set, rather than waiting out the production
one. The production path (``python -m wingman.cli``) is unchanged.
"""

from __future__ import annotations

import json
import sys

from wingman.mcp import server as mcp_server

#: ``python -c`` this, the timers as JSON, then ``wingman``'s arguments: ``wingman`` with
#: those module constants of ``wingman.mcp.server`` set first.
_WITH_TIMERS = ("import json, runpy, sys; import wingman.mcp.server as s; "
                "[setattr(s, k, float(v)) for k, v in json.loads(sys.argv.pop(1)).items()]; "
                "runpy.run_module('wingman.cli', run_name='__main__')")


def wingman_argv(timers: dict[str, float] | None = None) -> list[str]:
    """The start of the argv running ``wingman`` (its arguments follow), with ``timers`` (a
    constant's name to its seconds: ``{"HEAD_SECONDS": 2}``) set in its MCP server."""
    if not timers:
        return [sys.executable, "-m", "wingman.cli"]
    unknown = [name for name in timers
               if not isinstance(getattr(mcp_server, name, None), float)]
    assert not unknown, f"not a timer of wingman.mcp.server: {unknown}"
    return [sys.executable, "-c", _WITH_TIMERS, json.dumps(timers)]
