"""A real admission policy that makes the API server refuse some writes, for tests of what
Wingman does when admission refuses one of its own writes."""

from __future__ import annotations

import json

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
