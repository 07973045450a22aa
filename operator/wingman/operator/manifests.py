"""The objects the operator creates for a grant, as pure functions returning manifests.

Names are deterministic (a function of the grant's name), so every create is idempotent:
an operator killed and restarted at any point finds what it made and adopts it. The token
Secret's name is the exception: it has a random part, chosen with the Job and read back from the
Job the operator created or adopted, so nobody can plant a Secret under it before the Job exists.

- token Secret ``<job>-token-<random>`` (type ``wingman.dev/capability-token``, key
  ``token``), owned by the grant; the name is the one the gateway Job's pod mounts, and starts
  with the Job's name so admission can tell that a gateway pod binds executor tokens to its own
  grant's Secret (Jobs of earlier releases mount ``<grant>-token-<random>`` or
  ``<grant>-token``);
- gateway Job ``<grant>-gw``, owned by the grant, created before the token (which carries its
  UID) and runnable: its pod mounts the token Secret, so the kubelet starts no container before
  the operator stores the token there; its pod runs ``wingman gateway`` under tini (``INIT``)
  as ServiceAccount ``wingman-gateway`` with the pinned image, no shell, no privileges, a
  read-only root filesystem, and a ServiceAccount token of its own that lives 10 minutes
  (``service_account_volume``; not the automounted one, whose life the API server may extend
  to a year and which stays valid as long as the finished pod exists); a PostgreSQL audit DSN
  reaches it as a file on a Secret volume, never as an environment variable;
- the burn-marker Lease name ``wingman-burn-<jti>`` the gateway creates;
- preview Job ``<request>-preview``, owned by the ApprovalRequest: its pod runs
  ``wingman preview`` under tini as ServiceAccount ``wingman-preview`` (admission allows it
  dry runs only) with the pinned image and the same restrictions (its token included), the
  policy mounted for the allowlist, and reports its result in its termination message.

Everything made here carries the release's labels (``settings.object_labels``: the chart's
``app.kubernetes.io/*`` labels, the environment and ``commonLabels``) with
``app.kubernetes.io/managed-by: wingman-operator`` and a component; gateway pods also get the
scheduling, resources and extra labels and annotations of values ``gateway.pod``.
"""

from __future__ import annotations

import secrets
from typing import Any

from wingman.model.names import (
    APPROVAL_LABEL,
    AUDIT_DSN_FILE,
    AUDIT_DSN_MOUNT,
    DOCKER_MOUNT,
    EXPIRES_ANNOTATION,
    GRANT_LABEL,
    GRANT_UID_ANNOTATION,
    JOB_UID_ANNOTATION,
    KEYS_MOUNT,
    MANAGED,
    POLICY_MOUNT,
    ROLE_LABEL,
    SECRET_TYPE,
    TOKEN_MOUNT,
    job_name,
    label_value,
    preview_job_name,
    token_secret_name,
)
from wingman.settings import DEFAULT_SERVICEACCOUNT_DIR, OperatorSettings

MANAGER = "wingman-operator"

#: The image's init, PID 1 of the gateway and preview containers, before ``wingman <entry>`` in
#: their command. The kernel drops a signal PID 1 has no handler for, so ``wingman`` as PID 1
#: would lose a SIGTERM that arrives before Python installs its handler and run on until the
#: SIGKILL; tini forwards it (and reaps orphans). Admission pins the whole command.
INIT = ("/usr/bin/tini", "--")


def object_labels(settings: OperatorSettings, component: str) -> dict[str, str]:
    """The labels of an object the operator creates for a grant."""
    return {**MANAGED, **settings.object_labels, "app.kubernetes.io/managed-by": MANAGER,
            "app.kubernetes.io/component": component,
            "wingman.dev/environment": settings.environment}


def owner_reference(grant: dict[str, Any]) -> dict[str, Any]:
    meta = grant["metadata"]
    return {"apiVersion": grant.get("apiVersion", "wingman.dev/v1alpha1"),
            "kind": "ExecutionGrant", "name": meta["name"], "uid": meta["uid"],
            "controller": True}


def token_secret(grant: dict[str, Any], secret_name: str, token: str, claims_exp: int,
                 job_uid: str, settings: OperatorSettings) -> dict[str, Any]:
    """The Secret ``secret_name`` (the one the grant's Job mounts) that carries the token to the
    gateway pod (and nowhere else)."""
    name = grant["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": SECRET_TYPE,
        "metadata": {
            "name": secret_name,
            "namespace": grant["metadata"]["namespace"],
            "labels": {**object_labels(settings, "capability-token"), GRANT_LABEL: name},
            "annotations": {EXPIRES_ANNOTATION: str(claims_exp), JOB_UID_ANNOTATION: job_uid,
                            GRANT_UID_ANNOTATION: str(grant["metadata"]["uid"])},
            "ownerReferences": [owner_reference(grant)],
        },
        "stringData": {"token": token},
    }


def job_pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    """A Job's pod template spec (empty when the Job has none)."""
    pod: dict[str, Any] = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    return pod


def job_gateway_seconds(job: dict[str, Any], name: str) -> int | None:
    """A whole number of seconds the gateway Job gives its gateway in the environment variable
    ``name`` (``WINGMAN_EXEC_TIMEOUT_SECONDS``, ``WINGMAN_LEEWAY_SECONDS``), None when absent or
    not a plain number."""
    for container in job_pod_spec(job).get("containers") or []:
        if container.get("name") != "gateway":
            continue
        for var in container.get("env") or []:
            value = var.get("value")
            if var.get("name") == name and isinstance(value, str) and value.isascii() \
                    and value.isdigit():
                return int(value)
    return None


def job_token_secret(job: dict[str, Any]) -> str | None:
    """The token Secret a gateway Job's pod mounts (volume ``token``), None if it mounts none."""
    for volume in job_pod_spec(job).get("volumes") or []:
        if volume.get("name") == "token":
            name = (volume.get("secret") or {}).get("secretName")
            return str(name) if name else None
    return None


SERVICE_ACCOUNT_TOKEN_SECONDS = 600
"""The life of the ServiceAccount token a gateway or preview pod holds: the TokenRequest API's
shortest. The kubelet replaces it at 80 % of its life while the pod runs (the gateway reads it
again when it changes: ``kube.TokenFile``) and stops once the pod has ended, so a finished
pod's token, which the pod object keeps valid until the Job's ``ttlSecondsAfterFinished``
deletes it, expires at most this long after the pod ended. Never 3607 s, the life of the
default ``kube-api-access-*`` projection, which the API server extends to a year
(``--service-account-extend-token-expiration``)."""

SERVICE_ACCOUNT_VOLUME = "serviceaccount"


def service_account_volume() -> dict[str, Any]:
    """The pod's own ServiceAccount credentials, where Kubernetes mounts the default ones
    (``token``, ``ca.crt``, ``namespace``), with a token that lives
    :data:`SERVICE_ACCOUNT_TOKEN_SECONDS`; the pod sets ``automountServiceAccountToken: false``
    so the API server adds no ``kube-api-access-*`` volume beside it."""
    return {"name": SERVICE_ACCOUNT_VOLUME, "projected": {"sources": [
        {"serviceAccountToken": {"path": "token",
                                 "expirationSeconds": SERVICE_ACCOUNT_TOKEN_SECONDS}},
        {"configMap": {"name": "kube-root-ca.crt",
                       "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
            "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}}


def service_account_mount() -> dict[str, Any]:
    return {"name": SERVICE_ACCOUNT_VOLUME, "mountPath": DEFAULT_SERVICEACCOUNT_DIR,
            "readOnly": True}


START_SECONDS = 60
"""What a gateway Job's deadline gives beyond the token's life, the clock leeway and the
command's timeout: the pod's start-up, the gateway's checks before the command and its result
after."""


def gateway_job(grant: dict[str, Any], settings: OperatorSettings, ttl_seconds: int, *,
                job: str | None = None, secret_name: str | None = None) -> dict[str, Any]:
    """The gateway Job ``job`` (by default ``names.job_name``) for a grant; its pod mounts the
    token Secret ``secret_name`` (by default a new name after the Job's with a random part,
    ``names.token_secret_name``) and waits for it to exist."""
    name = grant["metadata"]["name"]
    job = job or job_name(name)
    if secret_name is None:
        secret_name = token_secret_name(job, secrets.token_hex(8))
    ns = grant["metadata"]["namespace"]
    labels = {**object_labels(settings, "gateway"), GRANT_LABEL: name, ROLE_LABEL: "gateway"}
    pod = settings.gateway_pod
    pod_labels = {**pod.labels, **labels}
    env: list[dict[str, Any]] = [
        {"name": "WINGMAN_NAMESPACE", "value": ns},
        {"name": "WINGMAN_ENVIRONMENT", "value": settings.environment},
        {"name": "WINGMAN_ISSUER", "value": settings.issuer},
        {"name": "WINGMAN_GRANT_NAME", "value": name},
        {"name": "WINGMAN_GRANT_UID", "value": str(grant["metadata"]["uid"])},
        {"name": "WINGMAN_JOB_UID", "valueFrom": {"fieldRef": {
            "fieldPath": "metadata.labels['batch.kubernetes.io/controller-uid']"}}},
        {"name": "WINGMAN_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "WINGMAN_TOKEN_FILE", "value": f"{TOKEN_MOUNT}/token"},
        {"name": "WINGMAN_PUBLIC_KEYS_DIR", "value": KEYS_MOUNT},
        {"name": "WINGMAN_POLICY_FILE", "value": f"{POLICY_MOUNT}/policy.yaml"},
        {"name": "WINGMAN_EXEC_TIMEOUT_SECONDS", "value": str(settings.gateway_timeout_seconds)},
        {"name": "WINGMAN_LEEWAY_SECONDS", "value": str(settings.leeway_seconds)},
        {"name": "WINGMAN_LOG_FORMAT", "value": settings.log_format},
        {"name": "WINGMAN_LOG_LEVEL", "value": settings.log_level},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "token", "secret": {"secretName": secret_name, "defaultMode": 0o400}},
        {"name": "keys", "configMap": {"name": settings.public_keys_configmap}},
        {"name": "policy", "configMap": {"name": settings.policy_configmap,
                                         "items": [{"key": "policy.yaml",
                                                    "path": "policy.yaml"}]}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        service_account_volume(),
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "token", "mountPath": TOKEN_MOUNT, "readOnly": True},
        {"name": "keys", "mountPath": KEYS_MOUNT, "readOnly": True},
        {"name": "policy", "mountPath": POLICY_MOUNT, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - the pod's own emptyDir
        service_account_mount(),
    ]
    if settings.gateway_docker_socket:
        env += [{"name": "WINGMAN_DOCKER_ENABLED", "value": "true"},
                {"name": "WINGMAN_DOCKER_HOST", "value": f"unix://{DOCKER_MOUNT}"}]
        volumes.append({"name": "docker", "hostPath": {"path": settings.gateway_docker_socket,
                                                        "type": "Socket"}})
        mounts.append({"name": "docker", "mountPath": DOCKER_MOUNT})
    if settings.audit_secret:
        # The DSN carries a password: a file on a Secret volume, never an environment variable
        # (those show in the pod's /proc/<pid>/environ, crash dumps and `kubectl describe`).
        secret, key = settings.audit_secret.split("/")
        env.append({"name": "WINGMAN_AUDIT_TARGET_FILE", "value": AUDIT_DSN_FILE})
        volumes.append({"name": "audit-dsn", "secret": {
            "secretName": secret, "defaultMode": 0o400,
            "items": [{"key": key, "path": AUDIT_DSN_FILE.rsplit("/", 1)[1]}]}})
        mounts.append({"name": "audit-dsn", "mountPath": AUDIT_DSN_MOUNT, "readOnly": True})
    else:
        env.append({"name": "WINGMAN_AUDIT_TARGET", "value": settings.audit_target})
        if settings.audit_volume_claim:
            directory = settings.audit_target.rsplit("/", 1)[0] or "/"
            volumes.append({"name": "audit", "persistentVolumeClaim": {
                "claimName": settings.audit_volume_claim}})
            mounts.append({"name": "audit", "mountPath": directory})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job, "namespace": ns, "labels": labels,
                     "ownerReferences": [owner_reference(grant)]},
        "spec": {
            "backoffLimit": 0,
            "parallelism": 1,
            "completions": 1,
            # the token's life, the clock leeway, the command's own timeout and pod start-up
            # (a claim long after the Job's creation extends it: grants.deadline_for)
            "activeDeadlineSeconds": ttl_seconds + settings.leeway_seconds
            + settings.gateway_timeout_seconds + START_SECONDS,
            "ttlSecondsAfterFinished": settings.job_ttl_seconds,
            "template": {
                "metadata": {"labels": pod_labels, **(
                    {"annotations": dict(pod.annotations)} if pod.annotations else {})},
                "spec": {
                    **_scheduling(settings),
                    "serviceAccountName": settings.gateway_service_account,
                    "automountServiceAccountToken": False,  # service_account_volume
                    "restartPolicy": "Never",
                    "enableServiceLinks": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                                        "runAsGroup": 65532, "fsGroup": 65532,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "gateway",
                        "image": settings.gateway_image,
                        "imagePullPolicy": pod.image_pull_policy,
                        "command": [*INIT, "wingman", "gateway"],
                        "env": env,
                        "volumeMounts": mounts,
                        "securityContext": {"allowPrivilegeEscalation": False,
                                            "readOnlyRootFilesystem": True,
                                            "privileged": False,
                                            "capabilities": {"drop": ["ALL"]}},
                        "resources": dict(pod.resources),
                    }],
                    "volumes": volumes,
                },
            },
        },
    }


def approval_owner(approval: dict[str, Any]) -> dict[str, Any]:
    meta = approval["metadata"]
    return {"apiVersion": approval.get("apiVersion", "wingman.dev/v1alpha1"),
            "kind": "ApprovalRequest", "name": meta["name"], "uid": meta["uid"],
            "controller": True}


def preview_job(approval: dict[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    """The preview Job of a request (not suspended: it holds no secret and can only dry-run).

    Its deadline is the policy's preview timeout; what it reports reaches the operator as its
    pod's termination message (``/dev/termination-log``), read by the kubelet."""
    name = approval["metadata"]["name"]
    ns = approval["metadata"]["namespace"]
    labels = {**object_labels(settings, "preview"), APPROVAL_LABEL: label_value(name),
              ROLE_LABEL: "preview"}
    pod = settings.gateway_pod
    timeout = settings.policy.preview.timeout_seconds
    env: list[dict[str, Any]] = [
        {"name": "WINGMAN_NAMESPACE", "value": ns},
        {"name": "WINGMAN_ENVIRONMENT", "value": settings.environment},
        {"name": "WINGMAN_APPROVAL_NAME", "value": name},
        {"name": "WINGMAN_APPROVAL_UID", "value": str(approval["metadata"]["uid"])},
        {"name": "WINGMAN_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "WINGMAN_POLICY_FILE", "value": f"{POLICY_MOUNT}/policy.yaml"},
        # the run reports before the Job's deadline, which also counts the pod's start-up
        {"name": "WINGMAN_PREVIEW_TIMEOUT_SECONDS", "value": str(max(5, timeout - 10))},
        {"name": "WINGMAN_TERMINATION_LOG", "value": "/dev/termination-log"},
        {"name": "WINGMAN_LOG_FORMAT", "value": settings.log_format},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "policy", "configMap": {"name": settings.policy_configmap,
                                         "items": [{"key": "policy.yaml",
                                                    "path": "policy.yaml"}]}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        service_account_volume(),
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "policy", "mountPath": POLICY_MOUNT, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - the pod's own emptyDir
        service_account_mount(),
    ]
    if settings.gateway_docker_socket:  # docker commands preview the container's state
        env += [{"name": "WINGMAN_DOCKER_ENABLED", "value": "true"},
                {"name": "WINGMAN_DOCKER_HOST", "value": f"unix://{DOCKER_MOUNT}"}]
        volumes.append({"name": "docker", "hostPath": {"path": settings.gateway_docker_socket,
                                                        "type": "Socket"}})
        mounts.append({"name": "docker", "mountPath": DOCKER_MOUNT})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": preview_job_name(name), "namespace": ns, "labels": labels,
                     "ownerReferences": [approval_owner(approval)]},
        "spec": {
            "backoffLimit": 0,
            "parallelism": 1,
            "completions": 1,
            "activeDeadlineSeconds": timeout,
            "ttlSecondsAfterFinished": settings.job_ttl_seconds,
            "template": {
                "metadata": {"labels": {**pod.labels, **labels}, **(
                    {"annotations": dict(pod.annotations)} if pod.annotations else {})},
                "spec": {
                    **_scheduling(settings),
                    "serviceAccountName": settings.preview_service_account,
                    "automountServiceAccountToken": False,  # service_account_volume
                    "restartPolicy": "Never",
                    "enableServiceLinks": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                                        "runAsGroup": 65532, "fsGroup": 65532,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "preview",
                        "image": settings.gateway_image,
                        "imagePullPolicy": pod.image_pull_policy,
                        "command": [*INIT, "wingman", "preview"],
                        "env": env,
                        "volumeMounts": mounts,
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File",
                        "securityContext": {"allowPrivilegeEscalation": False,
                                            "readOnlyRootFilesystem": True,
                                            "privileged": False,
                                            "capabilities": {"drop": ["ALL"]}},
                        "resources": dict(pod.resources),
                    }],
                    "volumes": volumes,
                },
            },
        },
    }


def _scheduling(settings: OperatorSettings) -> dict[str, Any]:
    pod = settings.gateway_pod
    out: dict[str, Any] = {}
    if pod.node_selector:
        out["nodeSelector"] = dict(pod.node_selector)
    if pod.tolerations:
        out["tolerations"] = [dict(t) for t in pod.tolerations]
    if pod.affinity:
        out["affinity"] = dict(pod.affinity)
    if pod.priority_class_name:
        out["priorityClassName"] = pod.priority_class_name
    return out


def owned_by(obj: Any, grant: Any) -> bool:
    """Whether ``obj`` (a Job, a Secret; None for none) names ``grant`` among its owners (pure)."""
    uid = grant["metadata"]["uid"]
    return obj is not None and any(
        o.get("uid") == uid for o in obj.get("metadata", {}).get("ownerReferences") or [])


__all__ = ["MANAGER", "SERVICE_ACCOUNT_TOKEN_SECONDS", "approval_owner", "gateway_job",
           "job_pod_spec", "job_token_secret", "object_labels", "owned_by", "owner_reference",
           "preview_job", "service_account_mount", "service_account_volume", "token_secret"]
