"""Names, labels and annotations of the objects Wingman makes, shared by their makers and readers.

Names are deterministic (a function of the grant's name), so every create is idempotent and
the gateway finds what the operator made; the one exception is the token Secret's, which has a
random part nobody can guess, chosen when the gateway Job is made and recorded in the Job's
pod template (the Job is made first, so a create of that Job is what makes the name known),
after the Job's own name (which admission relates to the gateway pod).
Pure: the standard library only.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

ROLE_LABEL = "wingman.dev/role"
GRANT_LABEL = "wingman.dev/grant"
MANAGED = {"app.kubernetes.io/managed-by": "wingman", "app.kubernetes.io/part-of": "wingman"}
TOKEN_MOUNT = "/var/run/wingman/token"  # noqa: S105 - a mount path
KEYS_MOUNT = "/etc/wingman/keys"
POLICY_MOUNT = "/etc/wingman/policy"
DOCKER_MOUNT = "/var/run/docker.sock"
AUDIT_DSN_MOUNT = "/etc/wingman/audit-dsn"  # the PostgreSQL DSN, a Secret volume (never env)
AUDIT_DSN_FILE = f"{AUDIT_DSN_MOUNT}/dsn"
SECRET_TYPE = "wingman.dev/capability-token"  # noqa: S105 - a Secret type
BURN_PREFIX = "wingman-burn-"
#: A Kubernetes object name, as the API server checks it (an RFC 1123 subdomain): labels of
#: lowercase letters, digits and inner '-', joined by single '.'; at most 253 characters (the
#: caller checks the length first: ``fullmatch`` only).
OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
#: A namespace's name, as the API server checks it (an RFC 1123 label): lowercase letters,
#: digits and inner '-', no '.'; at most 63 characters (the caller checks the length first:
#: ``fullmatch`` only).
NAMESPACE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _bounded(base: str, suffix: str, limit: int = 63) -> str:
    name = f"{base}{suffix}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    keep = limit - len(suffix) - 9
    return f"{base[:keep].rstrip('-.')}-{digest}{suffix}"  # no "-." or ".-" where cut


def legacy_secret_name(grant: str) -> str:
    """The token Secret name earlier releases gave every grant (``<grant>-token``): predictable,
    so anyone allowed to create Secrets could have planted one under it before the grant."""
    return _bounded(grant, "-token")


def token_secret_name(job: str, nonce: str) -> str:
    """The token Secret a new gateway Job ``job`` mounts: ``<job>-token-<nonce>``, where
    ``nonce`` is random (``secrets.token_hex(8)``), so the name is unknown until the Job exists.

    It starts with the Job's name (not the grant's, as it did up to this release) so admission
    can relate it to the gateway pod that binds executor tokens to it: the pod is
    ``<job>-<5 characters>`` (:func:`job_name`), and the ``...-gateway-writes`` policy lets it
    request executor tokens bound only to ``<job>-token-<16 hex digits>``. Job names are at
    most 57 characters, so the name (at most 80) is never cut."""
    return _bounded(job, f"-token-{nonce}", limit=253)


#: The end of a name whose Job name is hashed: ``-`` and nine lowercase hex digits.
_HASHED_END = re.compile(r"-[0-9a-f]{9}\Z")


def job_name(grant: str) -> str:
    """At most 57 characters: the Job controller then names its pods exactly
    ``<job>-<5 characters>``, which the gateway-writes admission policy relies on.

    ``<grant>-gw`` for a name of at most 54 characters that does not end in ``-`` and nine
    hex digits: admission derives that Job from the grant's name alone. Any other name gets
    ``<grant[:44]>-<9 hex digits of its SHA-256>-gw``, which ends so: no name whose Job is
    derived can name another grant's hashed Job (the CLI's and MCP's grant names end in ``-``
    and eight hex digits, so they are derived)."""
    name = f"{grant}-gw"
    if len(name) <= 57 and not _HASHED_END.search(grant):
        return name
    digest = hashlib.sha256(grant.encode()).hexdigest()[:9]
    return f"{grant[:44].rstrip('-.')}-{digest}-gw"


def derived_job(grant: str) -> bool:
    """Whether admission derives ``grant``'s Job from its name (``job_name`` is
    ``<grant>-gw``): a grant's token can then be issued on its claim."""
    return job_name(grant) == f"{grant}-gw"


def grant_job_name(grant: Mapping[str, Any]) -> str:
    """The Job a grant was issued with (``status.jobName``), else the one it would get."""
    recorded = (grant.get("status") or {}).get("jobName")
    return str(recorded) if recorded else job_name(str(grant["metadata"]["name"]))


APPROVAL_LABEL = "wingman.dev/approval"


def label_value(name: str) -> str:
    """An object's name as a label value (``APPROVAL_LABEL``): the name itself when it fits a
    label value's 63 characters, else its first characters and 8 hex digits of its SHA-256. An
    ApprovalRequest's name may be as long as a subdomain (253), and the API server refuses a
    Job whose label value is longer."""
    return name if len(name) <= 63 else _bounded(name, "")


def preview_job_name(approval: str) -> str:
    """The preview Job of an ApprovalRequest (57 characters at most, like gateway Jobs)."""
    return _bounded(approval, "-preview", limit=57)


def rollback_grant_name(grant: str) -> str:
    """The grant ``kubectl wingman rollback <grant>`` creates: one per forward grant."""
    return _bounded(grant, "-rollback")


def burn_marker_name(jti: str) -> str:
    return f"{BURN_PREFIX}{jti}"


JOB_UID_ANNOTATION = "wingman.dev/job-uid"
#: On a token Secret: the UID of the grant it was made for. Its owner reference names the grant
#: too, but a deletion with propagation Orphan removes that, and its Job (``WINGMAN_GRANT_UID``)
#: may be gone as well: the orphan sweep's record names the grant by this.
GRANT_UID_ANNOTATION = "wingman.dev/grant-uid"
EXPIRES_ANNOTATION = "wingman.dev/expires"


__all__ = [
    "APPROVAL_LABEL",
    "AUDIT_DSN_FILE",
    "AUDIT_DSN_MOUNT",
    "BURN_PREFIX",
    "DOCKER_MOUNT",
    "EXPIRES_ANNOTATION",
    "GRANT_LABEL",
    "GRANT_UID_ANNOTATION",
    "JOB_UID_ANNOTATION",
    "KEYS_MOUNT",
    "MANAGED",
    "NAMESPACE_NAME",
    "OBJECT_NAME",
    "POLICY_MOUNT",
    "ROLE_LABEL",
    "SECRET_TYPE",
    "TOKEN_MOUNT",
    "burn_marker_name",
    "derived_job",
    "grant_job_name",
    "job_name",
    "label_value",
    "legacy_secret_name",
    "preview_job_name",
    "rollback_grant_name",
    "token_secret_name",
]
