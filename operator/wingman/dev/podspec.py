"""A pod's container as the Docker Engine runs it: the translation the node harness applies.

:func:`docker_run_config` turns one container of a real pod object (as the API server returns
it: the chart's Deployment and test Pod, the operator's gateway Job) into the keyword arguments
of ``docker.containers.create``, the way a kubelet with a Docker runtime would:

- ``command``/``args`` replace the image's ENTRYPOINT/CMD (Kubernetes semantics, ``$(VAR)``
  expanded from the container's env);
- the security context (pod level, overridden by the container's): ``runAsUser``/
  ``runAsGroup`` become the user, ``fsGroup``/``supplementalGroups`` extra groups,
  ``runAsNonRoot`` is enforced against the effective user, ``readOnlyRootFilesystem`` mounts
  the root read-only, ``capabilities`` drop/add, ``allowPrivilegeEscalation: false`` sets
  ``no-new-privileges``, ``seccompProfile`` RuntimeDefault keeps the engine's default profile;
- every volumeMount becomes a bind mount of the volume's materialized directory (read-only when
  the mount or the volume is), a ``medium: Memory`` emptyDir a tmpfs; the ServiceAccount token
  is mounted where the kubelet mounts it;
- ``resources.limits.memory`` becomes the memory limit.

Any security-context field it does not know is refused (:class:`PodSpecNotSupported`), so a
chart or Job change that this translation would silently drop fails the tests instead. The
containers share the node's network (the local API server listens on loopback).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wingman.errors import WingmanError

SERVICEACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"

_POD_SECURITY = {"runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "supplementalGroups",
                 "seccompProfile", "fsGroupChangePolicy"}
_CONTAINER_SECURITY = {"runAsUser", "runAsGroup", "runAsNonRoot", "readOnlyRootFilesystem",
                       "allowPrivilegeEscalation", "privileged", "capabilities",
                       "seccompProfile"}
_QUANTITY = re.compile(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?")
_UNITS = {None: 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4,
          "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}


class PodSpecNotSupported(WingmanError):
    """The pod asks for something the Docker-backed node cannot honour."""

    reason = "CreateContainerConfigError"


@dataclass(frozen=True)
class Mount:
    """A volumeMount resolved to the host: where, from which directory, read-only or not."""

    path: str
    source: Path | None  # None: a tmpfs (emptyDir with medium Memory)
    read_only: bool
    tmpfs_options: str = ""


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (``256Mi``, ``1G``, ``1048576``) in bytes."""
    match = _QUANTITY.fullmatch(str(quantity).strip())
    if match is None:
        raise PodSpecNotSupported(f"memory quantity {quantity!r} is not supported (use a whole "
                                  "number with Ki, Mi, Gi, k, M or G)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def security(pod_spec: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, Any]:
    """The effective security context: the pod's, overridden by the container's."""
    pod_sc = dict(pod_spec.get("securityContext") or {})
    ctr_sc = dict(container.get("securityContext") or {})
    unknown = sorted(set(pod_sc) - _POD_SECURITY) + sorted(set(ctr_sc) - _CONTAINER_SECURITY)
    if unknown:
        raise PodSpecNotSupported(
            f"securityContext field(s) {', '.join(unknown)} are not supported by the Docker-"
            "backed node; teach wingman.dev.podspec to apply them")
    merged = {k: v for k, v in pod_sc.items() if k in _CONTAINER_SECURITY}
    merged.update(ctr_sc)
    merged["fsGroup"] = pod_sc.get("fsGroup")
    merged["supplementalGroups"] = list(pod_sc.get("supplementalGroups") or [])
    return merged


def _user(sc: Mapping[str, Any], image_user: str) -> str | None:
    uid = sc.get("runAsUser")
    gid = sc.get("runAsGroup")
    if uid is None and gid is None:
        effective = image_user or "0"
        user = None
    else:
        image_uid, _, image_gid = (image_user or "0").partition(":")
        effective = str(uid if uid is not None else image_uid)
        group = gid if gid is not None else (image_gid or None)
        user = effective if group in (None, "") else f"{effective}:{group}"
    if sc.get("runAsNonRoot"):
        name = effective.partition(":")[0]
        if not (name.isascii() and name.isdigit()):
            raise PodSpecNotSupported(f"runAsNonRoot is set and the image's user {name!r} is "
                                      "not numeric: the kubelet cannot verify it is non-root")
        if int(name) == 0:
            raise PodSpecNotSupported("runAsNonRoot is set but the container would run as "
                                      "root (uid 0)")
    return user


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known names replaced, ``$$`` becomes ``$``."""
    out: list[str] = []
    i = 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if value.startswith("$(", i):
            end = value.find(")", i + 2)
            if end != -1:
                name = value[i + 2:end]
                out.append(env[name] if name in env else value[i:end + 1])
                i = end + 1
                continue
        out.append(value[i])
        i += 1
    return "".join(out)


def docker_run_config(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    image: str,
    image_user: str,
    env: Mapping[str, str],
    mounts: Sequence[Mount],
    name: str,
) -> dict[str, Any]:
    """Keyword arguments for ``docker.containers.create`` that run ``container`` as specified."""
    spec = pod["spec"]
    sc = security(spec, container)
    command = [expand(str(c), env) for c in container.get("command") or []]
    args = [expand(str(a), env) for a in container.get("args") or []]
    config: dict[str, Any] = {
        "image": image,
        "name": name,
        "hostname": str(pod["metadata"]["name"])[:63],
        "environment": dict(env),
        "network_mode": "host",
        "detach": True,
        "labels": {"io.kubernetes.pod.name": str(pod["metadata"]["name"]),
                   "io.kubernetes.pod.namespace": str(pod["metadata"]["namespace"]),
                   "io.kubernetes.pod.uid": str(pod["metadata"]["uid"]),
                   "io.kubernetes.container.name": str(container.get("name", ""))},
    }
    if command:
        config["entrypoint"] = command
        config["command"] = args
    elif args:
        config["command"] = args
    if container.get("workingDir"):
        config["working_dir"] = str(container["workingDir"])
    user = _user(sc, image_user)
    if user is not None:
        config["user"] = user
    groups = [str(g) for g in ([sc["fsGroup"]] if sc.get("fsGroup") is not None else [])]
    groups += [str(g) for g in sc["supplementalGroups"]]
    if groups:
        config["group_add"] = list(dict.fromkeys(groups))
    if sc.get("readOnlyRootFilesystem"):
        config["read_only"] = True
    if sc.get("privileged"):
        config["privileged"] = True
    caps = sc.get("capabilities") or {}
    if caps.get("drop"):
        config["cap_drop"] = [str(c) for c in caps["drop"]]
    if caps.get("add"):
        config["cap_add"] = [str(c) for c in caps["add"]]
    security_opt: list[str] = []
    if sc.get("allowPrivilegeEscalation") is False:
        security_opt.append("no-new-privileges")
    seccomp = (sc.get("seccompProfile") or {}).get("type")
    if seccomp == "Unconfined":
        security_opt.append("seccomp=unconfined")
    elif seccomp not in (None, "RuntimeDefault"):
        raise PodSpecNotSupported(f"seccompProfile type {seccomp!r} is not supported by the "
                                  "Docker-backed node (RuntimeDefault or Unconfined)")
    if security_opt:
        config["security_opt"] = security_opt
    limits = (container.get("resources") or {}).get("limits") or {}
    if limits.get("memory"):
        config["mem_limit"] = memory_bytes(str(limits["memory"]))
    binds: dict[str, dict[str, str]] = {}
    tmpfs: dict[str, str] = {}
    for mount in mounts:
        if mount.source is None:
            tmpfs[mount.path] = mount.tmpfs_options or "mode=0777"
        else:
            binds[str(mount.source)] = {"bind": mount.path,
                                        "mode": "ro" if mount.read_only else "rw"}
    if binds:
        config["volumes"] = binds
    if tmpfs:
        config["tmpfs"] = tmpfs
    return config


__all__ = ["SERVICEACCOUNT_MOUNT", "Mount", "PodSpecNotSupported", "docker_run_config",
           "expand", "memory_bytes", "security"]
