"""What the preview run redacts from a command's report."""

from __future__ import annotations

import os
import time
from pathlib import Path

from kubernetes import client as k8s

from support.localserver import serving
from support.redirects import redirecting
from wingman.kube import Kube, TokenFile
from wingman.model import preview as model
from wingman.preview import report
from wingman.preview.proxy import DryRunProxy, self_signed
from wingman.preview.runner import _read_approval, _Run
from wingman.settings import PreviewSettings


def _renew(token_file: Path, token: str) -> None:
    staged = token_file.with_name("..token_tmp")
    staged.write_text(token)
    os.replace(staged, token_file)


def test_every_token_the_proxy_held_is_redacted_from_a_report(tmp_path: Path) -> None:
    """A preview that outlives its first ServiceAccount token (renewed by the kubelet) redacts
    the renewed one as well as the first, wherever kubectl's output or the API server's
    messages would show it."""
    token_file = tmp_path / "token"
    _renew(token_file, "first-token")
    tokens = TokenFile(token_file)
    tokens.read()
    _, ca, _ = self_signed(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    proxy = DryRunProxy("https://127.0.0.1:1", ca, tokens, work)
    _renew(token_file, "second-token")
    assert tokens.current() == "second-token"  # what the proxy's next call sends
    settings = PreviewSettings.from_env({"WINGMAN_APPROVAL_NAME": "r",
                                         "WINGMAN_APPROVAL_UID": "u",
                                         "KUBERNETES_SERVICE_HOST": "127.0.0.1"})
    run = _Run(settings, time.time)
    run.secrets.append(proxy.nonce)
    said = "error: Unauthorized: Bearer first-token, then Bearer second-token; nonce " + \
        proxy.nonce
    preview = report.kubectl_preview("kubectl scale deployment/web --replicas=2 -n apps", [],
                                     exit_code=1, output=said, timed_out=False,
                                     secrets=run.redacted(proxy))
    shown = repr(preview)
    assert "first-token" not in shown and "second-token" not in shown
    assert proxy.nonce not in shown
    assert "Unauthorized" in shown


def _read_through_redirect(reason: str) -> tuple[list[str], str]:
    """``_read_approval`` of request "r" where a server answers every read with a redirect (its
    reason phrase ``reason``, or the standard one): something else at the API server's address."""
    with serving(redirecting("http://example.invalid/", reason=reason or None)) as url:
        settings = PreviewSettings.from_env({"WINGMAN_APPROVAL_NAME": "r",
                                             "WINGMAN_APPROVAL_UID": "u",
                                             "KUBERNETES_SERVICE_HOST": "127.0.0.1"})
        kube = Kube(k8s.ApiClient(k8s.Configuration(host=url)))
        return _read_approval(settings, kube)


def test_a_request_that_cannot_be_read_is_a_result_saying_why_not_a_crash(
        tmp_path: Path) -> None:
    """Whatever keeps the request from being read (here a redirect, which no API server sends,
    so something else answers at the address) is the preview's recorded problem, naming the
    request and the answer, as a refusal of the API server is; not an internal error."""
    commands, problem = _read_through_redirect("")
    assert commands == []
    assert problem.startswith("cannot read ApprovalRequest r: ")
    assert "302" in problem


def test_a_long_reason_the_request_cannot_be_read_is_recorded_cut_not_refused(
        tmp_path: Path) -> None:
    """Whatever answers at the API server's address chooses the words of the answer the
    problem quotes (here a 2,000-character reason phrase of a redirect): the result the preview
    writes is still one the operator accepts, the problem cut to what a message holds, naming
    the request; not a result the operator refuses as invalid, losing why."""
    commands, problem = _read_through_redirect("Moved " + "x" * 2000)
    assert commands == [] and len(problem) > model.MAX_MESSAGE_CHARS
    _, encoded = model.fit(model.Preview("u", (), problem))
    recorded = model.decode(encoded)  # what the operator reads: PreviewInvalid before
    assert recorded.message.startswith("cannot read ApprovalRequest r: ")
    assert "302" in recorded.message and len(recorded.message) <= model.MAX_MESSAGE_CHARS
