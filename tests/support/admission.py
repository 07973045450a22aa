"""A real admission policy that makes the API server refuse some writes, for tests of what
Wingman does when admission refuses one of its own writes."""

from __future__ import annotations

import json
import time

from wingman.dev.cluster import LocalCluster


def refuse_updates(cluster: LocalCluster, namespace: str, name: str, *, group: str,
                   resources: list[str], expression: str = "false",
                   reason: str = "Forbidden") -> None:
    """A ValidatingAdmissionPolicy ``name`` (and its binding) refusing every UPDATE of
    ``resources`` in ``group`` in ``namespace`` for which ``expression`` is false, with the
    message "refused by the test's admission policy". The API server loads it a moment later
    (its informer); the caller deletes both, by ``name``."""
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [{
            "apiGroups": [group], "apiVersions": ["*"], "operations": ["UPDATE"],
            "resources": resources}]},
            "validations": [{"expression": expression, "reason": reason,
                             "message": "refused by the test's admission policy"}]}}
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"], "matchResources": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": [policy, binding]}))


def wait_refused(cluster: LocalCluster, *kubectl: str, timeout: float = 30.0) -> None:
    """Wait until the API server refuses the server-side dry run ``kubectl`` (an update a
    policy of ``refuse_updates`` matches, with ``--dry-run=server``): the policy is loaded.
    A sleep would guess how long the API server's informer takes on a loaded machine."""
    assert "--dry-run=server" in kubectl, "only a dry run leaves nothing changed"
    deadline = time.monotonic() + timeout
    while True:
        res = cluster.kubectl(*kubectl, check=False)
        if res.returncode != 0 and "refused by the test's admission policy" in res.stderr:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the admission policy was not loaded in {timeout:.0f} s: "
                                 f"kubectl {' '.join(kubectl)}: {res.stderr.strip()}")
        time.sleep(0.1)
