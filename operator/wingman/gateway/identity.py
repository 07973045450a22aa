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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wingman.errors import GrantDenied, WingmanError
from wingman.gateway.checks import Terminating
from wingman.kube import ApiError, Kube, Resource
from wingman.settings import GatewaySettings

__all__ = ["MAX_EXPIRATION_SECONDS", "MIN_EXPIRATION_SECONDS", "SERVICEACCOUNTS",
           "ExecutorToken", "request_token", "token_expiration", "token_request"]

SERVICEACCOUNTS = Resource("", "v1", "serviceaccounts")

MIN_EXPIRATION_SECONDS = 600
"""The shortest expiration the TokenRequest API grants (10 minutes)."""

_MARGIN_SECONDS = 60
"""What the token outlives the command's deadline by: the checks between the request and the
start of the command (the burn, the approval read again, the Running status)."""

MAX_EXPIRATION_SECONDS = 3600 + _MARGIN_SECONDS
"""The longest expiration asked for: the longest command deadline (3600 s) and the margin."""


@dataclass(frozen=True, slots=True)
class ExecutorToken:
    """A token of the executor account; never shown by ``repr``."""

    account: str
    token: str = field(repr=False)


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


Call = Callable[[float | None], dict[str, Any]]


def request_token(kube: Kube, settings: GatewaySettings, secret_name: str, *,
                  retried: Callable[[Call], dict[str, Any]] | None = None) -> ExecutorToken:
    """A fresh token of the executor account, bound to the grant's token Secret
    ``secret_name``; GrantDenied (``ExecutorTokenUnavailable``) when there is no such name or
    the API server does not give one. ``retried``: makes the request (a function of how long
    one try may wait for the answer), again while it fails in a way that may pass: a request
    whose answer was lost leaves a token nobody holds, bound to the grant's token Secret."""
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
        def post(once: float | None) -> dict[str, Any]:
            return kube.request("POST", SERVICEACCOUNTS.path(ns, account, "token"), body,
                                once=once)

        answer = post(None) if retried is None else retried(post)
        token = (answer.get("status") or {}).get("token")
        if isinstance(token, str) and token.strip():
            return ExecutorToken(account, token.strip())
        why = "the answer held no token"
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
