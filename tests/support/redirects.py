"""Local servers that answer with a redirect, as a proxy or another service at an API server's
(or a witness's) address might: for tests that a client follows none (an API server never
redirects, and a witness's copy answering a POST redirected to a GET is no checkpoint stored)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from support.localserver import QuietHandler, serving


class Redirecting(QuietHandler):
    """Answers every call, its body read first, with ``code`` (reason phrase ``reason``, else
    the standard one) to ``location``, in which ``{path}`` stands for the path asked."""

    location = "/elsewhere{path}"
    code = 302
    reason: str | None = None

    def redirect(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(self.code, self.reason)
        self.send_header("Location", self.location.format(path=self.path))
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = redirect


def redirecting(location: str, code: int = 302, reason: str | None = None) -> type[Redirecting]:
    """A ``Redirecting`` handler that sends every call ``code`` (with ``reason``) to
    ``location``."""
    return type("Redirecting", (Redirecting,),
                {"location": location, "code": code, "reason": reason})


@contextmanager
def redirecting_server(answer: Mapping[str, Any]) -> Iterator[tuple[str, list[str]]]:
    """Serve on a free loopback port: every call is answered ``302`` to ``/elsewhere<path>``,
    where ``answer`` would be answered as JSON. Yields (the server's URL, the paths asked at
    ``/elsewhere``: a client that follows no redirect leaves it empty)."""
    followed: list[str] = []

    class ToElsewhere(Redirecting):
        def _answer(self) -> None:
            if self.path.startswith("/elsewhere"):
                followed.append(self.path)
                self.send_json(200, dict(answer))
            else:
                self.redirect()

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

    with serving(ToElsewhere) as url:
        yield url, followed


__all__ = ["Redirecting", "redirecting", "redirecting_server"]
