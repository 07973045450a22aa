"""Process logging: JSON lines in a cluster (``WINGMAN_LOG_FORMAT=json``), text on a terminal.

kopf's own formatter does both and adds the object each handler works on (``object`` with
kind, namespace, name) to every record; ``extra={...}`` fields become JSON keys. Callers log
hashes of tokens and keys, never their values.
"""

from __future__ import annotations

import logging

import kopf


def setup_logging(fmt: str, *, verbose: bool = False) -> None:
    """Configure the root logger once for this process."""
    log_format = kopf.LogFormat.JSON if fmt == "json" else kopf.LogFormat.FULL
    kopf.configure(verbose=verbose, log_format=log_format, log_prefix=fmt != "json")
    # kopf reports every successful handler and timer run at INFO: at scale that is noise
    logging.getLogger("kopf.objects").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


__all__ = ["setup_logging"]
