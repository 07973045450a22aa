"""The operator's signing keys: the Secret that holds them, rotation, and the public ConfigMap.

Secret ``wingman-signing-key`` (``settings.signing_key_secret``), type Opaque:

- ``<kid>.pem``: one Ed25519 private key (PKCS#8 PEM) per key;
- ``active``: the kid that signs new tokens.

ConfigMap ``wingman-public-keys`` holds ``<kid>.pem`` (public PEM) for every key in the Secret,
so a token signed just before a rotation still verifies until it expires. Rotation
(``wingman keys rotate``) adds a key and makes it active; ``wingman keys prune`` removes the
retired ones once every token they signed has expired (the longest TTL plus leeway). The
operator generates the Secret on first start when it is absent and re-publishes the ConfigMap
whenever it loads the Secret.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wingman.capability.keys import SigningKey, generate_signing_key
from wingman.errors import ConfigError
from wingman.kube import CONFIGMAPS, SECRETS, ApiError, Kube, create_or_adopt

ACTIVE = "active"
MANAGED = {"app.kubernetes.io/managed-by": "wingman", "app.kubernetes.io/part-of": "wingman"}


@dataclass(frozen=True)
class KeyRing:
    """Every key in the Secret and which one signs."""

    keys: Mapping[str, SigningKey]
    active: str

    @property
    def signer(self) -> SigningKey:
        return self.keys[self.active]

    def public_data(self) -> dict[str, str]:
        return {f"{kid}.pem": key.public_pem().decode() for kid, key in sorted(self.keys.items())}

    def secret_data(self) -> dict[str, str]:
        data = {f"{kid}.pem": key.private_pem().decode() for kid, key in self.keys.items()}
        data[ACTIVE] = self.active
        return data


def new_ring() -> KeyRing:
    key = generate_signing_key()
    return KeyRing({key.kid: key}, key.kid)


def ring_from_secret(secret: Mapping[str, Any], name: str) -> KeyRing:
    """Parse the Secret's data (base64 values); ConfigError says what is wrong."""
    raw = secret.get("data") or {}
    decoded: dict[str, str] = {}
    for k, v in raw.items():
        try:
            decoded[k] = base64.b64decode(v).decode()
        except (ValueError, UnicodeDecodeError):
            raise ConfigError(f"Secret {name}: key {k!r} is not valid base64 text") from None
    keys: dict[str, SigningKey] = {}
    for entry, pem in decoded.items():
        if not entry.endswith(".pem"):
            continue
        kid = entry[:-4]
        try:
            keys[kid] = SigningKey.from_pem(pem, kid=kid)
        except Exception as exc:  # noqa: BLE001 - any parse failure is a config error
            raise ConfigError(f"Secret {name}: {entry} is not an Ed25519 private key in PEM "
                              f"({type(exc).__name__}); fix or delete the entry") from None
    active = decoded.get(ACTIVE, "").strip()
    if not keys:
        raise ConfigError(f"Secret {name} holds no <kid>.pem signing key; delete it to let the "
                          "operator generate one, or add a key")
    if not active and len(keys) == 1:
        active = next(iter(keys))
    if active not in keys:
        raise ConfigError(f"Secret {name}: 'active' names {active!r}, which is not one of its "
                          f"keys ({', '.join(sorted(keys))})")
    return KeyRing(keys, active)


def rotate(ring: KeyRing) -> KeyRing:
    """A ring with a new active key; the old keys stay (they still verify)."""
    key = generate_signing_key()
    return KeyRing({**ring.keys, key.kid: key}, key.kid)


def prune(ring: KeyRing) -> KeyRing:
    """Only the active key (call once every token of the retired keys has expired)."""
    return KeyRing({ring.active: ring.signer}, ring.active)


def _labels(labels: Mapping[str, str] | None, component: str) -> dict[str, str]:
    return {**MANAGED, **(labels or {}), "app.kubernetes.io/component": component}


def _secret(name: str, namespace: str, ring: KeyRing,
            labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": _labels(labels, "signing-key")},
            "stringData": ring.secret_data()}


def load_or_create(kube: Kube, namespace: str, secret_name: str, *,
                   labels: Mapping[str, str] | None = None) -> tuple[KeyRing, bool]:
    """The ring in the Secret, generating the Secret first when it is absent. (ring, created).
    ``labels`` (the release's) go on a Secret this creates."""
    existing = kube.get_or_none(SECRETS, namespace, secret_name)
    if existing is not None:
        return ring_from_secret(existing, secret_name), False
    ring = new_ring()
    obj, created = create_or_adopt(kube, SECRETS, namespace,
                                   _secret(secret_name, namespace, ring, labels))
    if not created:  # another replica won the race: use its key
        return ring_from_secret(obj, secret_name), False
    return ring, True


def store(kube: Kube, namespace: str, secret_name: str, ring: KeyRing) -> None:
    """Replace the Secret's data with ``ring`` (rotation and pruning)."""
    body = _secret(secret_name, namespace, ring)
    data = {k: base64.b64encode(v.encode()).decode() for k, v in ring.secret_data().items()}
    body.pop("stringData")
    body["data"] = data
    kube.request("PUT", SECRETS.path(namespace, secret_name), body)


def publish(kube: Kube, namespace: str, configmap_name: str, ring: KeyRing, *,
            labels: Mapping[str, str] | None = None) -> None:
    """Make the ConfigMap hold exactly the ring's public keys (``labels``: the release's)."""
    body: dict[str, Any] = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": configmap_name, "namespace": namespace,
                     "labels": _labels(labels, "public-keys")},
        "data": ring.public_data()}
    obj, created = create_or_adopt(kube, CONFIGMAPS, namespace, body)
    if created or obj.get("data") == body["data"]:
        return
    # an update keeps the labels the ConfigMap has (the command line does not know them)
    body["metadata"]["labels"] = {**(obj["metadata"].get("labels") or {}),
                                  **body["metadata"]["labels"]}
    body["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"]
    try:
        kube.request("PUT", CONFIGMAPS.path(namespace, configmap_name), body)
    except ApiError as exc:
        if not exc.conflict:
            raise
        publish(kube, namespace, configmap_name, ring, labels=labels)


__all__ = ["ACTIVE", "KeyRing", "load_or_create", "new_ring", "prune", "publish",
           "ring_from_secret", "rotate", "store"]
