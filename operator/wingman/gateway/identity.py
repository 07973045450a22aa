"""The executor identity: the short-lived ServiceAccount token kubectl commands run with.

This module owns how the gateway obtains the credentials of the account approved commands run
as (``GatewaySettings.executor_service_account``, ``wingman-executor`` in the chart). The
gateway's own account reads approvals and grants, writes its grant's status and burns tokens
in the release namespace; the executor account holds the target namespaces' rules
(``gateway.targets``) and nothing in the release namespace. So a command, whatever namespace
its allowlist pattern reaches, cannot touch Wingman's own objects.

The gateway asks the TokenRequest API (``serviceaccounts/<name>/token``, the one right its
account has on ServiceAccounts) for a token that expires soon after the command's deadline
(never less than the API's minimum, :data:`MIN_EXPIRATION_SECONDS`; the ``...-gateway-writes``
admission policy refuses more than :data:`MAX_EXPIRATION_SECONDS`). The token is bound to the
grant's token Secret (``status.tokenSecretName``, the Secret the gateway's pod mounts): the API
server accepts such a token only while that Secret exists, and the operator deletes it when
the grant ends, so the token dies with the grant whatever is left of its expiration. (It cannot
be bound to the gateway's pod: the API server binds a token to a pod only if the pod runs as
that account, and no pod runs as the executor.) The ``...-gateway-writes`` policy checks both:
it lets a gateway pod ``<job>-<5 characters>`` bind executor tokens only to a Secret
``<job>-token-<16 hex digits>`` (``names.token_secret_name``; a gateway Job of an earlier
release, whose Secret is named after the grant, gets none), and the request asks for no
audience, so the API server fills in its own (``--api-audiences``) before admission, which
accepts only those listed in the chart value ``admission.executorTokenAudiences``: a token
for another audience could be replayed against a service that trusts the cluster's issuer.
It is kept in memory only: the kubectl
executor writes it 0600 into its private temporary directory, and output is redacted of it. A
token that cannot be obtained refuses the execution before the capability token is burnt
(``ExecutorTokenUnavailable``), as does a grant whose status names no token Secret.

What the token lives (:attr:`ExecutorToken.lifetime`) is read from the answer
(``status.expirationTimestamp``, less the later of the gateway's clock and the API server's
``Date``: ``checks.judged_now``), never more than was asked for: an API server may give less
(``--service-account-max-token-expiration``). The gateway counts it from the moment it asked,
and the token must cover the command's whole run from its actual start: the checks between the
request and the start (the previewed targets, the Job, the burn, the approval read again, the
write of ``Running``, each made again while it fails in a way that may pass) may eat the margin
asked for. So before the burn a token with less than the command's timeout plus
:data:`START_MARGIN_SECONDS` left is asked for again, and one that still cannot cover that
refuses, unspent; just before the start, one with less than the command's timeout left refuses
(the capability token spent, nothing run): ``ExecutorTokenUnavailable`` both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wingman.errors import GrantDenied, WingmanError
from wingman.gateway.checks import Terminating, judged_now
from wingman.kube import ApiError, Kube, Resource
from wingman.model.approvals import parse_time
from wingman.settings import GatewaySettings

__all__ = ["MAX_EXPIRATION_SECONDS", "MIN_EXPIRATION_SECONDS", "SERVICEACCOUNTS",
           "START_MARGIN_SECONDS", "ExecutorToken", "check_covers", "lifetime",
           "request_token", "token_expiration", "token_request"]

SERVICEACCOUNTS = Resource("", "v1", "serviceaccounts")

MIN_EXPIRATION_SECONDS = 600
"""The shortest expiration the TokenRequest API grants (10 minutes)."""

_MARGIN_SECONDS = 60
"""What the token is asked to outlive the command's deadline by: the checks between the request
and the start of the command (the Job, the burn, the approval and the targets read again, the
Running status). Not relied on: what is left is measured before the burn and the start."""

MAX_EXPIRATION_SECONDS = 3600 + _MARGIN_SECONDS
"""The longest expiration asked for: the longest command deadline (3600 s) and the margin."""

START_MARGIN_SECONDS = 30
"""What the token must outlive the command's timeout by when the capability token is about to
be burnt (else it is asked for again, and refused unspent if the new one cannot): the checks
between the burn and the start. Less than the margin asked for, which a fresh token has."""


@dataclass(frozen=True, slots=True)
class ExecutorToken:
    """A token of the executor account; never shown by ``repr``."""

    account: str
    token: str = field(repr=False)
    #: seconds the token lives, counted from the moment it was asked for (never more than
    #: was asked for, and rounded down)
    lifetime: float = 0.0


def token_expiration(settings: GatewaySettings) -> int:
    """The expiration asked for: the API's minimum, or longer when the command's deadline
    needs it (a token that expires mid-command would fail its later API calls)."""
    return min(MAX_EXPIRATION_SECONDS,
               max(MIN_EXPIRATION_SECONDS, settings.exec_timeout_seconds + _MARGIN_SECONDS))


def token_request(settings: GatewaySettings, secret_name: str) -> dict[str, Any]:
    """The TokenRequest body: no ``audiences`` (the API server fills in its own, the only ones
    admission accepts), bound to the grant's token Secret ``secret_name`` (the token stops
    authenticating once that Secret is deleted)."""
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": token_expiration(settings),
                     "boundObjectRef": {"apiVersion": "v1", "kind": "Secret",
                                        "name": secret_name}}}


Call = Callable[[float | None], tuple[dict[str, Any], dt.datetime | None]]


def request_token(kube: Kube, settings: GatewaySettings, secret_name: str, *,
                  retried: Callable[[Call], tuple[dict[str, Any], dt.datetime | None]]
                  | None = None,
                  now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
                  ) -> ExecutorToken:
    """A fresh token of the executor account, bound to the grant's token Secret
    ``secret_name``, with what it lives (:func:`lifetime`); GrantDenied
    (``ExecutorTokenUnavailable``) when there is no such name or the API server does not give
    one. ``retried``: makes the request (a function of how long one try may wait for the
    answer), again while it fails in a way that may pass: a request whose answer was lost
    leaves a token nobody holds, bound to the grant's token Secret. ``now``: the gateway's
    clock."""
    account, ns = settings.executor_service_account, settings.namespace
    if not secret_name:
        raise GrantDenied(
            f"the grant's status names no token Secret (status.tokenSecretName) to bind a token "
            f"of the executor ServiceAccount {ns}/{account} to; the token was not spent and "
            "nothing was executed; the approval granted its command to this grant, so submit "
            "a new request to run it", reason="ExecutorTokenUnavailable")
    body = token_request(settings, secret_name)
    why = ""
    try:
        def post(once: float | None) -> tuple[dict[str, Any], dt.datetime | None]:
            return kube.request_dated("POST", SERVICEACCOUNTS.path(ns, account, "token"), body,
                                      once=once)

        answer, server_now = post(None) if retried is None else retried(post)
        status = answer.get("status") or {}
        token = status.get("token")
        expires = parse_time(status.get("expirationTimestamp"))
        if not (isinstance(token, str) and token.strip()):
            why = "the answer held no token"
        elif expires is None:
            why = "the answer did not say when the token expires (status.expirationTimestamp)"
        else:
            return ExecutorToken(account, token.strip(), lifetime(
                settings, expires, judged_now(now(), server_now)))
    except ApiError as exc:
        why = f"HTTP {exc.status}: {exc.message}"
    except Terminating:  # asked to stop while the request was being made again
        raise
    except WingmanError as exc:
        why = exc.message
    raise GrantDenied(
        f"cannot obtain a token of the executor ServiceAccount {ns}/{account} ({why}); the "
        "token was not spent and nothing was executed; check that the ServiceAccount exists, "
        "that the gateway's Role lets it create serviceaccounts/token for it, and what "
        "admission said, if it refused the request (see docs/troubleshooting.md, "
        "ExecutorTokenUnavailable)", reason="ExecutorTokenUnavailable")


def lifetime(settings: GatewaySettings, expires: dt.datetime, now: dt.datetime) -> float:
    """Seconds a token expiring at ``expires`` (the answer's ``expirationTimestamp``) lives from
    ``now`` (the later of the gateway's clock and the API server's when it answered), never
    more than was asked for, whole seconds rounded down (pure)."""
    return float(max(0, min(token_expiration(settings), int((expires - now).total_seconds()))))


def check_covers(settings: GatewaySettings, token: ExecutorToken, left: float, *,
                 spent: bool, margin: float = 0.0) -> None:
    """GrantDenied ``ExecutorTokenUnavailable`` unless ``token``, with ``left`` seconds left,
    outlives a command started now and killed at its timeout (plus ``margin``): a token that
    expires mid-command would fail the command's calls half-way. ``spent``: measured after the
    burn (the refusal says the capability token is spent)."""
    needed = settings.exec_timeout_seconds + margin
    if left >= needed:
        return
    ns, account = settings.namespace, token.account
    outcome = ("the capability token was spent (its burn marker exists) but nothing was "
               "executed: the checks after the burn took too long (a slow API server or audit "
               "trail)" if spent else "the token was not spent and nothing was executed; the "
               "API server gives tokens of this account shorter lives than the command's "
               "timeout needs (its --service-account-max-token-expiration), or the checks "
               "before the burn took too long")
    raise GrantDenied(
        f"the token of the executor ServiceAccount {ns}/{account} expires in "
        f"{max(0, int(left))} s, and the command may run up to {settings.exec_timeout_seconds} "
        f"s{f' after {int(margin)} s more of checks' if margin else ''} ({int(needed)} s): "
        "a token that expires mid-command would fail its calls half-way, so it was not "
        f"started; {outcome}; the approval granted its command to this grant, so submit a new "
        "request to run it", reason="ExecutorTokenUnavailable")
