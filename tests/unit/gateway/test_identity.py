"""The executor identity's token request: which account, and how long its token lives.

The request itself meets the real API server in tests/integration/gateway/test_executor.py,
and the admission policy that bounds it in tests/integration/test_admission.py.
"""

from __future__ import annotations

import datetime as dt

import pytest
from kubernetes import client as k8s

from wingman.errors import ConfigError, GrantDenied
from wingman.gateway import identity
from wingman.kube import Kube
from wingman.settings import GatewaySettings


def _settings(**env: str) -> GatewaySettings:
    base = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "WINGMAN_GRANT_NAME": "g1"}
    return GatewaySettings.from_env({**base, **env})


def test_the_executor_account_is_named_by_the_settings() -> None:
    assert _settings().executor_service_account == "wingman-executor"
    assert _settings(WINGMAN_EXECUTOR_SERVICE_ACCOUNT="runner").executor_service_account == \
        "runner"
    with pytest.raises(ConfigError, match="WINGMAN_EXECUTOR_SERVICE_ACCOUNT"):
        _settings(WINGMAN_EXECUTOR_SERVICE_ACCOUNT="Not A Name")


@pytest.mark.parametrize(("timeout", "expiration"), [
    ("1", 600), ("120", 600), ("540", 600),  # the TokenRequest API's minimum
    ("541", 601), ("1800", 1860),  # a token that expired mid-command would fail its calls
    ("3600", 3660),  # the longest deadline: what admission allows at most
])
def test_the_token_lives_the_api_minimum_unless_the_command_needs_longer(
    timeout: str, expiration: int,
) -> None:
    settings = _settings(WINGMAN_EXEC_TIMEOUT_SECONDS=timeout)
    assert identity.token_expiration(settings) == expiration
    assert identity.token_request(settings, "grant-1-gw-token-0123456789abcdef") == {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": expiration,
                 "boundObjectRef": {"apiVersion": "v1", "kind": "Secret",
                                    "name": "grant-1-gw-token-0123456789abcdef"}}}
    assert expiration <= identity.MAX_EXPIRATION_SECONDS


def test_the_token_is_never_shown_by_repr() -> None:
    token = identity.ExecutorToken("wingman-executor", "secret-token-value")
    assert "secret-token-value" not in repr(token)


def test_a_grant_naming_no_token_secret_gets_no_executor_token() -> None:
    """The token is bound to the grant's token Secret (it dies when the operator deletes that
    Secret at the grant's end); with no Secret to bind it to, none is asked for."""
    with pytest.raises(GrantDenied) as info:
        identity.request_token(Kube(k8s.ApiClient()), _settings(), "")
    assert info.value.reason == "ExecutorTokenUnavailable"
    assert "status.tokenSecretName" in info.value.message
    # the approval holds the command for this grant: a new grant for it would be refused
    assert "submit a new request" in info.value.message
    assert "new grant" not in info.value.message


@pytest.mark.parametrize(("expires_in", "lifetime"), [
    (600, 600.0), (600.9, 600.0),  # whole seconds, rounded down
    (7200, 600.0),  # never more than was asked for
    (300, 300.0),  # an API server that gives less (--service-account-max-token-expiration)
    (-5, 0.0),
])
def test_the_token_lives_what_the_answer_says_never_more_than_asked(
    expires_in: float, lifetime: float,
) -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert identity.lifetime(_settings(), now + dt.timedelta(seconds=expires_in), now) == \
        lifetime


def test_a_token_that_cannot_outlive_the_command_refuses_saying_whether_it_was_spent() -> None:
    settings = _settings(WINGMAN_EXEC_TIMEOUT_SECONDS="120")
    token = identity.ExecutorToken("wingman-executor", "secret-token-value", 600.0)
    identity.check_covers(settings, token, 150.0, spent=False,
                          margin=identity.START_MARGIN_SECONDS)
    identity.check_covers(settings, token, 120.0, spent=True)
    with pytest.raises(GrantDenied) as before:
        identity.check_covers(settings, token, 149.0, spent=False,
                              margin=identity.START_MARGIN_SECONDS)
    with pytest.raises(GrantDenied) as after:
        identity.check_covers(settings, token, 119.5, spent=True)
    assert before.value.reason == after.value.reason == "ExecutorTokenUnavailable"
    assert "expires in 149 s" in before.value.message and "not spent" in before.value.message
    assert "expires in 119 s" in after.value.message and "was spent" in after.value.message
    assert "secret-token-value" not in before.value.message + after.value.message
