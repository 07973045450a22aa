"""The dev node harness: plays scheduler + kubelet for gateway pods on the local control plane.

The local control plane (``wingman.dev.cluster``) has no kube-scheduler and no node that runs
containers. :class:`NodeHarness` fills that gap for ``wingman dev run`` and the tests:

- it registers a Node (``wingman-dev-node``) and keeps its Ready condition fresh;
- it watches pods in the namespaces it was given (admin credentials) and binds each unbound
  pod to its Node through ``pods/binding``, as a scheduler would;
- it runs a pod's single container as a local process ONLY when the container's image is in
  ``images`` (image -> argv prefix that stands in for the image's entrypoint); any other pod is
  marked Failed with reason ``ImageNotRunnable`` and never run;
- before starting it materializes the pod's volumes in a per-pod directory (Secret, ConfigMap,
  downwardAPI, emptyDir, projected incl. ServiceAccount tokens, PVCs mapped to local
  directories), requests a REAL ServiceAccount token bound to the pod (TokenRequest) when the
  pod automounts one, resolves the container's env from the API and rewrites every env value
  or argv element under a volumeMount's mountPath to the materialized directory;
- the process gets only the env the pod declares plus what is needed to run (PATH with the
  pinned kubectl and the venv, LANG, HOME/TMPDIR, KUBERNETES_SERVICE_HOST/PORT) - never the
  harness's own KUBECONFIG;
- it reports pod status like a kubelet (Running, then Succeeded/Failed with the container's
  terminated state, including the termination message the container wrote to its
  ``terminationMessagePath``, at most 4096 bytes, as the kubelet does), so the real Job
  controller completes or fails the Job; it honours
  ``activeDeadlineSeconds`` and pod deletion (kills the process group, confirms deletion).

Token and Secret contents are written to files for the process and never logged; they are
removed from disk as soon as the process ends.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from wingman.dev import podspec
from wingman.dev import tools as devtools
from wingman.dev.cluster import LocalCluster
from wingman.dev.engine import DockerEngine
from wingman.errors import ConfigError, WingmanError
from wingman.kube import ApiError, Kube

log = logging.getLogger(__name__)

NODE_NAME = "wingman-dev-node"
SERVICEACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_SECONDS = 3600
LOCAL_IP = "127.0.0.1"
_TERMINAL = ("Succeeded", "Failed")
TERMINATION_MESSAGE_BYTES = 4096
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
_FIELD_KEY = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")


class PodRejected(WingmanError):
    """A pod cannot be run by the node harness (image, shape, volume or env problem)."""

    reason = "PodRejected"

    def __init__(self, message: str, *, reason: str, retryable: bool = False) -> None:
        super().__init__(message, reason=reason)
        self.retryable = retryable


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


@dataclass(frozen=True)
class PodRun:
    """One container process the harness ran, for tests and for `wingman dev run`."""

    namespace: str
    name: str
    uid: str
    argv: tuple[str, ...]
    exit_code: int
    reason: str  # Completed, Error, DeadlineExceeded, Deleted, Terminated
    stdout: Path
    stderr: Path
    started_at: dt.datetime
    finished_at: dt.datetime


@dataclass
class _Active:
    uid: str
    deleted: threading.Event = field(default_factory=threading.Event)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _stamp(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- pure helpers


def expand(value: str, variables: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known names are replaced, ``$$`` becomes ``$``."""
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "$" and i + 1 < len(value):
            nxt = value[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = value.find(")", i + 2)
                if end != -1:
                    name = value[i + 2:end]
                    out.append(variables[name] if name in variables else value[i:end + 1])
                    i = end + 1
                    continue
        out.append(ch)
        i += 1
    return "".join(out)


def rewrite_path(value: str, mounts: Sequence[tuple[str, Path]]) -> str:
    """``value`` with a leading volumeMount path replaced by its materialized directory.

    ``mounts`` is (mountPath, local directory); the longest matching mountPath wins and only
    whole path components match (``/tmp`` rewrites ``/tmp/x`` but not ``/tmpx``).
    """
    for mount_path, local in sorted(mounts, key=lambda m: len(m[0]), reverse=True):
        base = mount_path.rstrip("/")
        if not base:
            continue
        if value == base:
            return str(local)
        if value.startswith(base + "/"):
            return str(local) + value[len(base):]
    return value


#: The image's init that the gateway and preview Jobs' command starts with
#: (``wingman.operator.manifests.INIT``): it only matters as a container's PID 1, so a local
#: process runs the command after it without it.
IMAGE_INIT = ("/usr/bin/tini", "--")


def build_argv(prefix: Sequence[str], command: Sequence[str], args: Sequence[str]) -> list[str]:
    """The local argv for a container: the image's argv prefix replaces its entrypoint.

    With a ``command``, its first element (the executable inside the image) is replaced by the
    prefix: ``["wingman", "gateway"]`` -> ``[python, -m, wingman.cli, gateway]``, and so is
    ``["/usr/bin/tini", "--", "wingman", "gateway"]`` (``IMAGE_INIT`` is dropped: the local
    process is not a PID 1); without one the prefix is the image's default entrypoint. ``args``
    follow.
    """
    if len(command) > len(IMAGE_INIT) and tuple(command[:len(IMAGE_INIT)]) == IMAGE_INIT:
        command = command[len(IMAGE_INIT):]
    return [*prefix, *command[1:], *args]


def _safe_relative(path: str, what: str) -> PurePosixPath:
    rel = PurePosixPath(path)
    if not path or rel.is_absolute() or ".." in rel.parts:
        raise PodRejected(f"{what} {path!r} must be a relative path without '..'",
                          reason="InvalidVolumePath")
    return rel


def _write_file(root: Path, rel: str, data: bytes, mode: int, what: str) -> None:
    target = root.joinpath(*_safe_relative(rel, what).parts)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode & 0o777)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- API access


class _Rest:
    """JSON requests on the kubernetes client's authenticated transport: the calls through
    ``wingman.kube.Kube`` (as every other call of Wingman's: no redirect followed, the answer
    read to a cap, ``CALL_SECONDS`` per try), the pod watch's stream (which ``Kube`` does not
    make: an answer that lasts as long as the watch) on the connection itself."""

    #: how long one call may wait for the API server, per try
    CALL_SECONDS = 30.0

    def __init__(self, api_client: Any) -> None:
        self.client = api_client
        self.host = str(api_client.configuration.host).rstrip("/")
        self.kube = Kube(api_client, timeout=self.CALL_SECONDS)

    def _send(self, method: str, path: str, query: Mapping[str, str] | None, body: Any,
              content_type: str, timeout: float | tuple[float, float]) -> Any:
        url = self.host + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": "application/json", "Content-Type": content_type,
                   "User-Agent": "wingman-devnode"}
        self.client.update_params_for_auth(headers, [], ["BearerToken"], path, method, body)
        return self.client.rest_client.request(method, url, headers=headers, body=body,
                                               _request_timeout=timeout).response

    @staticmethod
    def _error(raw: Any, data: bytes) -> _ApiError:
        message = data.decode(errors="replace")[:500]
        with contextlib.suppress(ValueError, AttributeError):
            message = str(json.loads(data).get("message", message))
        return _ApiError(int(raw.status), message)

    def call(self, method: str, path: str, *, query: Mapping[str, str] | None = None,
             body: Any = None, content_type: str = "application/json") -> dict[str, Any]:
        """The decoded answer; ``_ApiError`` (the status and the API server's message) when it
        refused, ``ClusterError`` when there was no answer it can use."""
        try:
            return self.kube.request(method, path, body, content_type=content_type,
                                     query=query)
        except ApiError as exc:
            raise _ApiError(exc.status, exc.detail) from None

    def get(self, path: str) -> dict[str, Any] | None:
        """GET ``path``; None when it does not exist."""
        try:
            return self.call("GET", path)
        except _ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def stream(self, path: str, query: Mapping[str, str],
               timeout: tuple[float, float]) -> Any:
        raw = self._send("GET", path, query, None, "application/json", timeout)
        if int(raw.status) != 200:
            try:
                data: bytes = raw.data
            finally:
                raw.release_conn()
            raise self._error(raw, data)
        return raw


def _q(part: str) -> str:
    return quote(part, safe="")


# --------------------------------------------------------------------------- the harness


class NodeHarness:
    """A scheduler + kubelet for pods whose images map to local commands. See the module doc."""

    def __init__(
        self,
        *,
        cluster: LocalCluster,
        namespaces: Sequence[str],
        workdir: Path,
        gateway_image: str,
        volume_dirs: Mapping[str, Path] | None = None,
        images: Mapping[str, Sequence[str]] | None = None,
        node_name: str = NODE_NAME,
        concurrency: int = 8,
        keep: bool = False,
        engine: DockerEngine | None = None,
        mount_timeout: float = 20.0,
        heartbeat_seconds: float = 10.0,
        kill_grace_seconds: float = 10.0,
    ) -> None:
        if isinstance(namespaces, str) or not namespaces:
            raise ConfigError("NodeHarness needs a list of namespaces to watch, e.g. "
                              "namespaces=['wingman']")
        if concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
        runnable = dict(images) if images is not None else {
            gateway_image: [sys.executable, "-m", "wingman.cli"]}
        for image, prefix in runnable.items():
            if isinstance(prefix, str) or not prefix or not all(
                    isinstance(p, str) and p for p in prefix):
                raise ConfigError(f"images[{image!r}] must be a non-empty list of argv strings "
                                  "(the local command that stands in for the image)")
        self.cluster = cluster
        self.namespaces = list(dict.fromkeys(namespaces))
        self.workdir = Path(workdir)
        self.gateway_image = gateway_image
        self.volume_dirs = {k: Path(v) for k, v in (volume_dirs or {}).items()}
        self.images: dict[str, list[str]] = {k: list(v) for k, v in runnable.items()}
        self.node_name = node_name
        self.concurrency = concurrency
        self.keep = keep
        #: With an engine, pods run as real containers of their images in that Docker Engine
        #: (see wingman.dev.podspec); without one, as local processes standing in for them.
        self.engine = engine
        self._docker: Any = engine.client() if engine is not None else None
        self.mount_timeout = mount_timeout
        self.heartbeat_seconds = heartbeat_seconds
        self.kill_grace_seconds = kill_grace_seconds
        server = urlsplit(cluster.server)
        if not server.hostname:
            raise ConfigError(f"cannot parse the API server address {cluster.server!r}")
        self._api_host = server.hostname
        self._api_port = server.port or 443
        self._instance = uuid.uuid4().hex[:8]
        self._cond = threading.Condition()
        self._active: dict[str, _Active] = {}
        self._seen: set[str] = set()
        self._runs: list[PodRun] = []
        self._pod_dirs: list[Path] = []
        self._stopping = threading.Event()
        self._streams: dict[str, Any] = {}
        self._threads: list[threading.Thread] = []
        self._executor: ThreadPoolExecutor | None = None
        self._rest: _Rest | None = None
        self._clients: list[Any] = []
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> NodeHarness:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _client(self) -> _Rest:
        api = self.cluster.api_client()
        self._clients.append(api)
        return _Rest(api)

    def start(self) -> None:
        """Register the Node, then watch the namespaces and run their pods."""
        if self._started:
            raise ConfigError("this NodeHarness was already started; create a new one")
        self._started = True
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._rest = self._client()
        try:
            self._register_node()
        except Exception:
            self.stop()
            raise
        self._executor = ThreadPoolExecutor(max_workers=self.concurrency,
                                            thread_name_prefix="devnode-pod")
        beat = threading.Thread(target=self._heartbeat, name="devnode-heartbeat", daemon=True)
        beat.start()
        self._threads.append(beat)
        for ns in self.namespaces:
            t = threading.Thread(target=self._watch_loop, args=(ns,),
                                 name=f"devnode-watch-{ns}", daemon=True)
            t.start()
            self._threads.append(t)
        log.info("node harness %s up: node %s, namespaces %s, images %s", self._instance,
                 self.node_name, ", ".join(self.namespaces), ", ".join(self.images))

    def stop(self) -> None:
        """Stop watching, terminate running pods (marked Failed), remove per-pod dirs."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        with self._cond:
            streams = list(self._streams.values())
        for resp in streams:
            with contextlib.suppress(Exception):
                resp.shutdown()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        for t in self._threads:
            t.join(timeout=10)
        with self._cond:
            self._active.clear()
            self._cond.notify_all()
        if self._rest is not None:
            with contextlib.suppress(Exception):
                self._patch_node(ready="Unknown", reason="NodeStatusUnknown",
                                 message="The wingman dev node harness stopped.")
        for pod_dir in self._pod_dirs:
            if self.keep:
                self._scrub(pod_dir)
            else:
                shutil.rmtree(pod_dir, ignore_errors=True)
        for api in self._clients:
            with contextlib.suppress(Exception):
                api.close()

    @property
    def runs(self) -> list[PodRun]:
        """Every process run so far, in the order they finished."""
        with self._cond:
            return list(self._runs)

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until no pod is queued or running; raise TimeoutError naming the busy ones."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._active:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"node harness still busy after {timeout:.0f}s with "
                                       f"{len(self._active)} pod(s): {sorted(self._active)}")
                self._cond.wait(left)

    # ------------------------------------------------------------------ the Node

    def _node_status(self, ready: str, reason: str, message: str) -> dict[str, Any]:
        now = _now()
        conditions = [{"type": t, "status": "False", "reason": r, "message": m,
                       "lastHeartbeatTime": now, "lastTransitionTime": now}
                      for t, r, m in (
                          ("MemoryPressure", "KubeletHasSufficientMemory", "enough memory"),
                          ("DiskPressure", "KubeletHasNoDiskPressure", "no disk pressure"),
                          ("PIDPressure", "KubeletHasSufficientPID", "enough PIDs"))]
        conditions.append({"type": "Ready", "status": ready, "reason": reason,
                           "message": message, "lastHeartbeatTime": now,
                           "lastTransitionTime": now})
        capacity = {"cpu": "8", "memory": "16Gi", "pods": str(max(self.concurrency, 110))}
        return {
            "capacity": capacity, "allocatable": capacity, "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": LOCAL_IP},
                          {"type": "Hostname", "address": self.node_name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": self._instance,
                         "kernelVersion": "", "osImage": "wingman dev node harness",
                         "containerRuntimeVersion": "wingman-devnode://0",
                         "kubeletVersion": "wingman-devnode", "kubeProxyVersion": "",
                         "operatingSystem": "linux", "architecture": "amd64"},
        }

    def _register_node(self) -> None:
        assert self._rest is not None
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": self.node_name,
            "labels": {"kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux",
                       "wingman.dev/dev-node": "true"}}}
        try:
            self._rest.call("POST", "/api/v1/nodes", body=body)
        except _ApiError as exc:
            if exc.status != 409:
                raise
        self._patch_node(ready="True", reason="KubeletReady",
                         message="wingman dev node harness is posting ready status")

    def _patch_node(self, *, ready: str, reason: str, message: str) -> None:
        assert self._rest is not None
        self._rest.call("PATCH", f"/api/v1/nodes/{_q(self.node_name)}/status",
                        body={"status": self._node_status(ready, reason, message)},
                        content_type="application/strategic-merge-patch+json")

    def _heartbeat(self) -> None:
        while not self._stopping.wait(self.heartbeat_seconds):
            try:
                self._patch_node(ready="True", reason="KubeletReady",
                                 message="wingman dev node harness is posting ready status")
            except Exception as exc:  # noqa: BLE001 - keep beating; say why it failed
                log.warning("node %s: status heartbeat failed: %s", self.node_name, exc)

    # ------------------------------------------------------------------ watching pods

    def _watch_loop(self, namespace: str) -> None:
        rest = self._client()
        path = f"/api/v1/namespaces/{_q(namespace)}/pods"
        version: str | None = None
        while not self._stopping.is_set():
            try:
                if version is None:
                    listing = rest.call("GET", path)
                    version = str(listing["metadata"]["resourceVersion"])
                    for item in listing.get("items", []):
                        self._observe("ADDED", item)
                version = self._watch_once(rest, namespace, path, version)
            except Exception as exc:  # noqa: BLE001 - relist after any watch failure
                if self._stopping.is_set():
                    break
                log.warning("pod watch in %s failed (%s); relisting", namespace, exc)
                version = None
                self._stopping.wait(1.0)

    def _watch_once(self, rest: _Rest, namespace: str, path: str, version: str) -> str | None:
        query = {"watch": "1", "resourceVersion": version, "allowWatchBookmarks": "true",
                 "timeoutSeconds": "60"}
        resp = rest.stream(path, query, (5, 90))
        with self._cond:
            self._streams[namespace] = resp
        try:
            if self._stopping.is_set():
                return version
            buffer = b""
            for chunk in resp.stream(amt=None, decode_content=False):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind = str(event.get("type", ""))
                    obj: dict[str, Any] = event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            return None  # too old: relist
                        raise _ApiError(int(obj.get("code") or 500),
                                        str(obj.get("message", "watch error")))
                    version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                    if kind != "BOOKMARK":
                        self._observe(kind, obj)
            return version
        finally:
            with self._cond:
                self._streams.pop(namespace, None)
            with contextlib.suppress(Exception):
                resp.release_conn()

    def _observe(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata", {})
        spec = pod.get("spec", {})
        uid = str(meta.get("uid", ""))
        if not uid:
            return
        phase = pod.get("status", {}).get("phase", "Pending")
        node = spec.get("nodeName") or ""
        with self._cond:
            active = self._active.get(uid)
            if active is not None:
                if kind == "DELETED" or meta.get("deletionTimestamp"):
                    active.deleted.set()
                return
            if kind == "DELETED" or uid in self._seen or self._stopping.is_set():
                return
            if meta.get("deletionTimestamp"):
                if node == self.node_name and phase not in _TERMINAL:
                    # Bound here but not running here (e.g. an earlier harness): confirm the
                    # deletion the way a kubelet does once the containers are gone.
                    self._seen.add(uid)
                    self._submit(self._confirm_deletion, pod)
                return
            if node or phase != "Pending":
                return
            self._seen.add(uid)
            self._active[uid] = _Active(uid)
            if not self._submit(self._work, pod):
                self._active.pop(uid, None)

    def _submit(self, fn: Any, pod: dict[str, Any]) -> bool:
        if self._executor is None:
            return False
        try:
            self._executor.submit(fn, pod)
        except RuntimeError:  # shut down
            return False
        return True

    def _release(self, uid: str, *, forget: bool = False) -> None:
        with self._cond:
            self._active.pop(uid, None)
            if forget:
                self._seen.discard(uid)
            self._cond.notify_all()

    # ------------------------------------------------------------------ one pod

    def _work(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        forget = False
        try:
            with self._cond:
                active = self._active.get(uid)
            if active is None or self._stopping.is_set():
                forget = True
                return
            if active.deleted.is_set():
                return
            if not self._bind(ns, name, uid):
                return
            self._execute(ns, name, uid, active)
        except Exception:
            log.exception("pod %s/%s: the node harness failed to handle it", ns, name)
            with contextlib.suppress(Exception):
                self._patch_status(ns, name, {"phase": "Failed", "reason": "NodeHarnessError",
                                              "message": "the wingman dev node harness failed "
                                              "to run this pod; see its log"})
        finally:
            self._release(uid, forget=forget)

    def _bind(self, ns: str, name: str, uid: str) -> bool:
        assert self._rest is not None
        body = {"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": ns, "uid": uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name}}
        try:
            self._rest.call("POST", f"/api/v1/namespaces/{_q(ns)}/pods/{_q(name)}/binding",
                            body=body)
        except _ApiError as exc:
            if exc.status in (404, 409):
                log.info("pod %s/%s: not bound here (%s)", ns, name, exc)
                return False
            raise
        log.info("pod %s/%s: bound to node %s", ns, name, self.node_name)
        return True

    def _patch_status(self, ns: str, name: str, status: dict[str, Any]) -> None:
        assert self._rest is not None
        try:
            self._rest.call("PATCH", f"/api/v1/namespaces/{_q(ns)}/pods/{_q(name)}/status",
                            body={"status": status},
                            content_type="application/strategic-merge-patch+json")
        except _ApiError as exc:
            if exc.status != 404:
                raise

    def _delete_now(self, ns: str, name: str, uid: str) -> None:
        assert self._rest is not None
        with contextlib.suppress(_ApiError):
            self._rest.call("DELETE", f"/api/v1/namespaces/{_q(ns)}/pods/{_q(name)}",
                            body={"apiVersion": "v1", "kind": "DeleteOptions",
                                  "gracePeriodSeconds": 0, "preconditions": {"uid": uid}})

    def _confirm_deletion(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            self._patch_status(meta["namespace"], meta["name"], {
                "phase": "Failed", "reason": "Deleted",
                "message": "deleted before the node harness ran it"})
            self._delete_now(meta["namespace"], meta["name"], meta["uid"])
        except Exception as exc:  # noqa: BLE001 - best effort, like a kubelet's
            log.warning("pod %s/%s: could not confirm deletion: %s", meta["namespace"],
                        meta["name"], exc)

    def _pod_dir(self, ns: str, name: str, uid: str) -> Path:
        pod_dir = self.workdir / f"{ns}_{name}_{uid[:8]}"
        pod_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._cond:
            self._pod_dirs.append(pod_dir)
        return pod_dir

    @staticmethod
    def _scrub(pod_dir: Path) -> None:
        """Remove everything but the logs (volumes hold Secret data and tokens)."""
        for child in ("volumes", "serviceaccount", "tmp"):
            shutil.rmtree(pod_dir / child, ignore_errors=True)

    def _execute(self, ns: str, name: str, uid: str, active: _Active) -> None:
        assert self._rest is not None
        pod = self._rest.get(f"/api/v1/namespaces/{_q(ns)}/pods/{_q(name)}")
        if pod is None or pod["metadata"]["uid"] != uid:
            return
        start_time = _now()
        started_mono = time.monotonic()
        spec = pod["spec"]
        try:
            container = self._check_shape(spec)
        except PodRejected as exc:
            log.warning("pod %s/%s refused: %s", ns, name, exc.message)
            self._fail_before_start(pod, start_time, exc)
            return
        pod_dir = self._pod_dir(ns, name, uid)
        try:
            prepared = self._prepare_with_retry(pod, container, pod_dir, active)
        except PodRejected as exc:
            log.warning("pod %s/%s cannot start: %s", ns, name, exc.message)
            self._scrub(pod_dir)
            if active.deleted.is_set():
                self._delete_now(ns, name, uid)
            else:
                self._fail_before_start(pod, start_time, exc)
            return
        if prepared is None:  # deleted or stopping while waiting for its volumes
            self._scrub(pod_dir)
            if active.deleted.is_set():
                self._delete_now(ns, name, uid)
            return
        if self.engine is not None:
            assert isinstance(prepared, dict)
            self._run_container(pod, container, prepared, pod_dir, active, start_time,
                                started_mono)
            return
        assert isinstance(prepared, tuple)
        argv, env, cwd = prepared
        self._run(pod, container, argv, env, cwd, pod_dir, active, start_time, started_mono)

    def _check_shape(self, spec: dict[str, Any]) -> dict[str, Any]:
        containers = spec.get("containers") or []
        images = [c.get("image", "") for c in
                  [*containers, *(spec.get("initContainers") or []),
                   *(spec.get("ephemeralContainers") or [])]]
        if self.engine is not None:
            missing = [i for i in images if not self.engine.has_image(i)]
            if missing:
                raise PodRejected(
                    f"image {missing[0]!r} is not in this node's Docker Engine and the node "
                    "cannot pull; load it first (docker load / docker import)",
                    reason="ErrImageNeverPull")
        unknown = [] if self.engine is not None else [i for i in images if i not in self.images]
        if unknown:
            raise PodRejected(
                f"image {unknown[0]!r} is not runnable by the wingman dev node harness: it runs "
                f"only images mapped to local commands ({', '.join(sorted(self.images))}); "
                "run this pod on a real cluster, or map the image in NodeHarness(images=...)",
                reason="ImageNotRunnable")
        if len(containers) != 1 or spec.get("initContainers") or spec.get(
                "ephemeralContainers"):
            raise PodRejected("the wingman dev node harness runs pods with exactly one "
                              "container and no init or ephemeral containers",
                              reason="PodShapeNotSupported")
        if spec.get("restartPolicy", "Always") != "Never" and self.engine is None:
            raise PodRejected("the wingman dev node harness runs only pods with "
                              "restartPolicy Never (Job pods)",
                              reason="RestartPolicyNotSupported")
        return dict(containers[0])

    def _container_status(self, container: dict[str, Any], state: dict[str, Any], *,
                          running: bool, pid: int | None = None) -> dict[str, Any]:
        status: dict[str, Any] = {
            "name": container.get("name", ""), "image": container.get("image", ""),
            "imageID": f"wingman-devnode://{container.get('image', '')}",
            "ready": running, "started": running, "restartCount": 0, "state": state}
        if pid is not None:
            status["containerID"] = f"wingman-devnode://{self._instance}-{pid}"
        return status

    @staticmethod
    def _conditions(*, ready: bool, reason: str = "") -> list[dict[str, Any]]:
        now = _now()
        out: list[dict[str, Any]] = [
            {"type": "PodReadyToStartContainers", "status": "True" if ready else "False"},
               {"type": "Initialized", "status": "True"},
               {"type": "ContainersReady", "status": "True" if ready else "False"},
               {"type": "Ready", "status": "True" if ready else "False"}]
        for cond in out:
            cond["lastTransitionTime"] = now
            cond["lastProbeTime"] = None
            if cond["status"] == "False" and reason:
                cond["reason"] = reason
        return out

    def _fail_before_start(self, pod: dict[str, Any], start_time: str,
                           exc: PodRejected) -> None:
        meta = pod["metadata"]
        containers = pod["spec"].get("containers") or []
        waiting = {"waiting": {"reason": exc.reason, "message": exc.message}}
        self._patch_status(meta["namespace"], meta["name"], {
            "phase": "Failed", "reason": exc.reason, "message": exc.message,
            "startTime": start_time, "hostIP": LOCAL_IP, "hostIPs": [{"ip": LOCAL_IP}],
            "conditions": self._conditions(ready=False, reason=exc.reason),
            "containerStatuses": [self._container_status(c, waiting, running=False)
                                  for c in containers],
        })

    # ------------------------------------------------------------------ volumes and env

    def _prepare_with_retry(self, pod: dict[str, Any], container: dict[str, Any],
                            pod_dir: Path, active: _Active
                            ) -> tuple[list[str], dict[str, str], Path] | dict[str, Any] | None:
        deadline = time.monotonic() + self.mount_timeout
        while True:
            try:
                if self.engine is not None:
                    return self._prepare_container(pod, container, pod_dir)
                return self._prepare(pod, container, pod_dir)
            except PodRejected as exc:
                if not exc.retryable or time.monotonic() >= deadline:
                    raise
                log.info("pod %s/%s waiting: %s", pod["metadata"]["namespace"],
                         pod["metadata"]["name"], exc.message)
            if active.deleted.is_set() or self._stopping.wait(0.5) or active.deleted.is_set():
                return None

    def _prepare(self, pod: dict[str, Any], container: dict[str, Any], pod_dir: Path
                 ) -> tuple[list[str], dict[str, str], Path]:
        self._scrub(pod_dir)
        volumes_root = pod_dir / "volumes"
        volumes_root.mkdir(mode=0o700)
        source = _Source(self, pod)
        volumes: dict[str, Path] = {}
        for volume in pod["spec"].get("volumes") or []:
            volumes[volume["name"]] = self._materialize(volume, volumes_root, source)
        mounts: list[tuple[str, Path]] = []
        for mount in container.get("volumeMounts") or []:
            vol = mount.get("name", "")
            if vol not in volumes:
                raise PodRejected(f"volumeMount {vol!r} names no volume of the pod",
                                  reason="CreateContainerConfigError")
            local = volumes[vol]
            if mount.get("subPath"):
                local = local.joinpath(*_safe_relative(mount["subPath"], "subPath").parts)
            mounts.append((str(mount["mountPath"]), local))
        # the kubelet mounts an empty file at terminationMessagePath for the container to write
        termination = pod_dir / "termination-log"
        _write_file(pod_dir, "termination-log", b"", 0o600, "termination-log")
        mounts.append((str(container.get("terminationMessagePath")
                           or DEFAULT_TERMINATION_PATH), termination))
        tmp = Path(rewrite_path("/tmp", mounts))  # noqa: S108 - the pod's own /tmp
        if tmp == Path("/tmp"):  # noqa: S108 - no volume at /tmp: give the pod its own
            tmp = pod_dir / "tmp"
            tmp.mkdir(mode=0o700)

        env: dict[str, str] = {
            "PATH": os.pathsep.join([str(devtools.tool_path("kubectl").parent),
                                     str(Path(sys.executable).parent),
                                     "/usr/local/bin", "/usr/bin", "/bin"]),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "HOME": str(tmp),
            "TMPDIR": str(tmp),
            "KUBERNETES_SERVICE_HOST": self._api_host,
            "KUBERNETES_SERVICE_PORT": str(self._api_port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(self._api_port),
        }
        if source.automount():
            sa_dir = pod_dir / "serviceaccount"
            sa_dir.mkdir(mode=0o700)
            token = source.token(audience=None, seconds=TOKEN_SECONDS)
            _write_file(sa_dir, "token", token.encode(), 0o400, "token")
            _write_file(sa_dir, "ca.crt", self.cluster.ca_file.read_bytes(), 0o444, "ca.crt")
            _write_file(sa_dir, "namespace", pod["metadata"]["namespace"].encode(), 0o444,
                        "namespace")
            env["WINGMAN_SERVICEACCOUNT_DIR"] = str(sa_dir)
        else:
            # a pod that mounts its own ServiceAccount volume (a projected token) where
            # Kubernetes mounts the automounted one: the process finds it through the same
            # variable, at the volume's directory
            sa_local = rewrite_path(SERVICEACCOUNT_MOUNT, mounts)
            if sa_local != SERVICEACCOUNT_MOUNT:
                env["WINGMAN_SERVICEACCOUNT_DIR"] = sa_local
        declared = source.container_env(container, dict(env))
        env.update({k: rewrite_path(v, mounts) for k, v in declared.items()})

        image = container.get("image", "")
        command = [rewrite_path(expand(c, env), mounts) for c in container.get("command") or []]
        args = [rewrite_path(expand(a, env), mounts) for a in container.get("args") or []]
        argv = build_argv(self.images[image], command, args)
        cwd = tmp
        if container.get("workingDir"):
            mapped = Path(rewrite_path(container["workingDir"], mounts))
            if mapped.is_dir():
                cwd = mapped
        return argv, env, cwd

    def _materialize(self, volume: dict[str, Any], root: Path, source: _Source) -> Path:
        name = str(volume["name"])
        if "persistentVolumeClaim" in volume:
            claim = str(volume["persistentVolumeClaim"].get("claimName", ""))
            local = self.volume_dirs.get(claim)
            if local is None:
                raise PodRejected(
                    f"volume {name!r} uses PersistentVolumeClaim {claim!r}, which has no local "
                    f"directory in the node harness (known: {sorted(self.volume_dirs) or 'none'})"
                    f"; pass NodeHarness(volume_dirs={{{claim!r}: Path(...)}})",
                    reason="VolumeNotAvailable")
            local.mkdir(parents=True, exist_ok=True)
            return local
        target = root / name
        target.mkdir(mode=0o700)
        if "emptyDir" in volume:
            return target
        if "secret" in volume:
            src = volume["secret"]
            self._write_items(target, source.secret(src.get("secretName", ""),
                                                    bool(src.get("optional"))),
                              src.get("items"), int(src.get("defaultMode", 0o644)),
                              f"Secret {src.get('secretName')!r}", bool(src.get("optional")))
            return target
        if "configMap" in volume:
            src = volume["configMap"]
            self._write_items(target, source.config_map(src.get("name", ""),
                                                        bool(src.get("optional"))),
                              src.get("items"), int(src.get("defaultMode", 0o644)),
                              f"ConfigMap {src.get('name')!r}", bool(src.get("optional")))
            return target
        if "downwardAPI" in volume:
            src = volume["downwardAPI"]
            self._write_downward(target, src.get("items") or [],
                                 int(src.get("defaultMode", 0o644)), source)
            return target
        if "projected" in volume:
            src = volume["projected"]
            mode = int(src.get("defaultMode", 0o644))
            for proj in src.get("sources") or []:
                self._write_projection(target, proj, mode, source)
            return target
        kinds = sorted(k for k in volume if k != "name")
        raise PodRejected(f"volume {name!r} is of a type the wingman dev node harness does not "
                          f"provide ({', '.join(kinds)}); supported: secret, configMap, "
                          "emptyDir, downwardAPI, projected, persistentVolumeClaim",
                          reason="VolumeNotSupported")

    @staticmethod
    def _write_items(target: Path, data: dict[str, bytes] | None, items: Any, mode: int,
                     what: str, optional: bool) -> None:
        if data is None:
            return  # optional and absent
        if not items:
            for key, value in data.items():
                _write_file(target, key, value, mode, f"{what} key")
            return
        for item in items:
            key = str(item.get("key", ""))
            if key not in data:
                if optional:
                    continue
                raise PodRejected(f"{what} has no key {key!r}",
                                  reason="CreateContainerConfigError", retryable=True)
            _write_file(target, str(item.get("path", key)), data[key],
                        int(item.get("mode", mode)), f"{what} item path")

    @staticmethod
    def _write_downward(target: Path, items: Sequence[dict[str, Any]], mode: int,
                        source: _Source) -> None:
        for item in items:
            if "fieldRef" not in item:
                raise PodRejected("downwardAPI items support fieldRef only",
                                  reason="VolumeNotSupported")
            value = source.field(item["fieldRef"].get("fieldPath", ""), file=True)
            _write_file(target, str(item.get("path", "")), value.encode(),
                        int(item.get("mode", mode)), "downwardAPI item path")

    def _write_projection(self, target: Path, proj: dict[str, Any], mode: int,
                          source: _Source) -> None:
        if "serviceAccountToken" in proj:
            src = proj["serviceAccountToken"]
            token = source.token(audience=src.get("audience"),
                                 seconds=int(src.get("expirationSeconds", TOKEN_SECONDS)))
            _write_file(target, str(src.get("path", "token")), token.encode(), mode,
                        "serviceAccountToken path")
        elif "secret" in proj:
            src = proj["secret"]
            optional = bool(src.get("optional"))
            self._write_items(target, source.secret(src.get("name", ""), optional),
                              src.get("items"), mode, f"Secret {src.get('name')!r}", optional)
        elif "configMap" in proj:
            src = proj["configMap"]
            optional = bool(src.get("optional"))
            self._write_items(target, source.config_map(src.get("name", ""), optional),
                              src.get("items"), mode, f"ConfigMap {src.get('name')!r}", optional)
        elif "downwardAPI" in proj:
            self._write_downward(target, proj["downwardAPI"].get("items") or [], mode, source)
        else:
            raise PodRejected(f"projected source {sorted(proj)} is not supported by the "
                              "wingman dev node harness", reason="VolumeNotSupported")

    # ------------------------------------------------------------------ the process

    def _run(self, pod: dict[str, Any], container: dict[str, Any], argv: list[str],
             env: dict[str, str], cwd: Path, pod_dir: Path, active: _Active,
             start_time: str, started_mono: float) -> None:
        meta = pod["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        stdout_path, stderr_path = pod_dir / "stdout.log", pod_dir / "stderr.log"
        started_at = dt.datetime.now(dt.UTC)
        try:
            with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
                proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=err,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            self._scrub(pod_dir)
            self._fail_before_start(pod, start_time, PodRejected(
                f"cannot start {argv[0]!r}: {exc.strerror or exc}", reason="StartError"))
            return
        log.info("pod %s/%s: started pid %d", ns, name, proc.pid)
        try:
            self._patch_status(ns, name, {
                "phase": "Running", "startTime": start_time,
                "hostIP": LOCAL_IP, "hostIPs": [{"ip": LOCAL_IP}],
                "podIP": LOCAL_IP, "podIPs": [{"ip": LOCAL_IP}],
                "conditions": self._conditions(ready=True),
                "containerStatuses": [self._container_status(
                    container, {"running": {"startedAt": _stamp(started_at)}}, running=True,
                    pid=proc.pid)],
            })
        except Exception:
            self._kill(proc, 0)
            raise
        deadline_s = pod["spec"].get("activeDeadlineSeconds")
        deadline = started_mono + float(deadline_s) if deadline_s else None
        grace = min(float(pod["spec"].get("terminationGracePeriodSeconds", 30)),
                    self.kill_grace_seconds)
        outcome = ""
        while True:
            try:
                rc = proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            if active.deleted.is_set():
                outcome = "Deleted"
            elif self._stopping.is_set():
                outcome = "Terminated"
            elif deadline is not None and time.monotonic() >= deadline:
                outcome = "DeadlineExceeded"
            if outcome:
                log.info("pod %s/%s: killing pid %d (%s)", ns, name, proc.pid, outcome)
                rc = self._kill(proc, grace)
                break
        self._kill_group(proc.pid)
        finished_at = dt.datetime.now(dt.UTC)
        exit_code = rc if rc >= 0 else 128 - rc
        message = self._termination_message(pod_dir)
        self._scrub(pod_dir)
        reason = "Completed" if exit_code == 0 else "Error"
        status: dict[str, Any] = {
            "phase": "Succeeded" if exit_code == 0 and outcome in ("", "Deleted") else "Failed",
            "conditions": self._conditions(ready=False, reason="PodCompleted"),
            "containerStatuses": [self._container_status(container, {"terminated": {
                "exitCode": exit_code, "reason": reason, "startedAt": _stamp(started_at),
                "finishedAt": _stamp(finished_at),
                "containerID": f"wingman-devnode://{self._instance}-{proc.pid}",
                **({"message": message} if message else {})}},
                running=False, pid=proc.pid)],
        }
        if outcome == "DeadlineExceeded":
            status.update(reason="DeadlineExceeded",
                          message="Pod was active on the node longer than the specified "
                                  "deadline")
        elif outcome == "Terminated":
            status.update(reason="Terminated",
                          message="Pod was terminated because the wingman dev node harness "
                                  "stopped")
        run = PodRun(namespace=ns, name=name, uid=uid, argv=tuple(argv), exit_code=exit_code,
                     reason=outcome or reason, stdout=stdout_path, stderr=stderr_path,
                     started_at=started_at, finished_at=finished_at)
        with self._cond:
            self._runs.append(run)
        log.info("pod %s/%s: exited %d (%s)", ns, name, exit_code, run.reason)
        self._patch_status(ns, name, status)
        if outcome == "Deleted":
            self._delete_now(ns, name, uid)

    @staticmethod
    def _termination_message(pod_dir: Path) -> str:
        """What the container wrote to its termination message file (the first 4096 bytes,
        as the kubelet reads it)."""
        try:
            with open(pod_dir / "termination-log", "rb") as fh:
                data = fh.read(TERMINATION_MESSAGE_BYTES)
        except OSError:
            return ""
        return data.decode("utf-8", errors="replace")

    @staticmethod
    def _kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)

    def _kill(self, proc: subprocess.Popen[bytes], grace: float) -> int:
        """TERM the process group, KILL it after ``grace`` seconds; the exit status."""
        if grace > 0:
            self._kill_group(proc.pid, signal.SIGTERM)
            try:
                return proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        self._kill_group(proc.pid, signal.SIGKILL)
        return proc.wait()

    # ------------------------------------------------------------------ Docker-backed pods

    def _prepare_container(self, pod: dict[str, Any], container: dict[str, Any],
                           pod_dir: Path) -> dict[str, Any]:
        """Volumes materialized with the kubelet's ownership rules; the container's config."""
        self._scrub(pod_dir)
        volumes_root = pod_dir / "volumes"
        volumes_root.mkdir(mode=0o700)
        spec = pod["spec"]
        try:
            sc = podspec.security(spec, container)
        except podspec.PodSpecNotSupported as exc:
            raise PodRejected(exc.message, reason=exc.reason) from None
        fs_group = sc.get("fsGroup")
        source = _Source(self, pod)
        volumes: dict[str, podspec.Mount] = {}
        for volume in spec.get("volumes") or []:
            vname = str(volume["name"])
            empty = volume.get("emptyDir")
            if isinstance(empty, dict) and empty.get("medium") == "Memory":
                size = empty.get("sizeLimit")
                opts = "mode=0777" + (f",size={podspec.memory_bytes(str(size))}" if size else "")
                volumes[vname] = podspec.Mount("", None, False, opts)
                continue
            local = self._materialize(volume, volumes_root, source)
            read_only = any(k in volume for k in ("secret", "configMap", "downwardAPI",
                                                  "projected"))
            if "emptyDir" in volume:
                local.chmod(0o777)
            else:
                _own(local, fs_group, read_only=read_only)
            volumes[vname] = podspec.Mount("", local, read_only)
        mounts: list[podspec.Mount] = []
        for mount in container.get("volumeMounts") or []:
            vol = volumes.get(str(mount.get("name", "")))
            if vol is None:
                raise PodRejected(f"volumeMount {mount.get('name')!r} names no volume of the "
                                  "pod", reason="CreateContainerConfigError")
            src = vol.source
            if src is not None and mount.get("subPath"):
                src = src.joinpath(*_safe_relative(mount["subPath"], "subPath").parts)
            mounts.append(podspec.Mount(str(mount["mountPath"]), src,
                                        vol.read_only or bool(mount.get("readOnly")),
                                        vol.tmpfs_options))
        # the kubelet mounts an empty file at terminationMessagePath for the container to write
        _write_file(pod_dir, "termination-log", b"", 0o666, "termination-log")
        mounts.append(podspec.Mount(str(container.get("terminationMessagePath")
                                        or DEFAULT_TERMINATION_PATH),
                                    pod_dir / "termination-log", False))
        env: dict[str, str] = {
            "KUBERNETES_SERVICE_HOST": self._api_host,
            "KUBERNETES_SERVICE_PORT": str(self._api_port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(self._api_port),
        }
        if source.automount() and not any(m.path == podspec.SERVICEACCOUNT_MOUNT
                                           for m in mounts):
            sa_dir = pod_dir / "serviceaccount"
            sa_dir.mkdir(mode=0o700)
            token = source.token(audience=None, seconds=TOKEN_SECONDS)
            _write_file(sa_dir, "token", token.encode(), 0o644, "token")
            _write_file(sa_dir, "ca.crt", self.cluster.ca_file.read_bytes(), 0o644, "ca.crt")
            _write_file(sa_dir, "namespace", pod["metadata"]["namespace"].encode(), 0o644,
                        "namespace")
            _own(sa_dir, fs_group, read_only=True)
            uid = sc.get("runAsUser")
            if uid is not None:  # the kubelet's rule: a token only the pod's user reads
                os.chown(sa_dir / "token", int(uid), -1)
                (sa_dir / "token").chmod(0o600)
            mounts.append(podspec.Mount(podspec.SERVICEACCOUNT_MOUNT, sa_dir, True))
        env.update(source.container_env(container, dict(env)))
        image = str(container.get("image", ""))
        image_user = str(self._docker.images.get(image).attrs["Config"].get("User") or "")
        meta = pod["metadata"]
        name = f"k8s_{container.get('name', 'c')}_{meta['name']}_{meta['namespace']}_" \
               f"{meta['uid'][:8]}_{uuid.uuid4().hex[:4]}"
        try:
            return podspec.docker_run_config(pod, container, image=image,
                                             image_user=image_user, env=env, mounts=mounts,
                                             name=name)
        except podspec.PodSpecNotSupported as exc:
            raise PodRejected(exc.message, reason=exc.reason) from None

    def _run_container(self, pod: dict[str, Any], container: dict[str, Any],
                       config: dict[str, Any], pod_dir: Path, active: _Active,
                       start_time: str, started_mono: float) -> None:
        import docker

        meta = pod["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        argv = tuple(str(a) for a in [*(config.get("entrypoint") or []),
                                      *(config.get("command") or [])])
        started_at = dt.datetime.now(dt.UTC)
        try:
            ctr = self._docker.containers.create(**config)
        except docker.errors.APIError as exc:
            self._scrub(pod_dir)
            self._fail_before_start(pod, start_time, PodRejected(
                f"cannot create the container: {exc.explanation or exc}",
                reason="CreateContainerError"))
            return
        try:
            try:
                ctr.start()
            except docker.errors.APIError as exc:
                self._fail_before_start(pod, start_time, PodRejected(
                    f"cannot start the container: {exc.explanation or exc}",
                    reason="RunContainerError"))
                return
            container_id = f"docker://{ctr.id}"
            log.info("pod %s/%s: started container %s", ns, name, ctr.id[:12])
            image_id = f"docker-pullable://{ctr.image.id}"
            self._patch_status(ns, name, {
                "phase": "Running", "startTime": start_time,
                "hostIP": LOCAL_IP, "hostIPs": [{"ip": LOCAL_IP}],
                "podIP": LOCAL_IP, "podIPs": [{"ip": LOCAL_IP}],
                "conditions": self._conditions(ready=True),
                "containerStatuses": [{
                    **self._container_status(container, {"running": {
                        "startedAt": _stamp(started_at)}}, running=True),
                    "containerID": container_id, "imageID": image_id}],
            })
            outcome = self._await_container(pod, ctr, active, started_mono)
            state = ctr.attrs["State"]
            exit_code = int(state.get("ExitCode", 137))
            finished_at = dt.datetime.now(dt.UTC)
            (pod_dir / "stdout.log").write_bytes(ctr.logs(stdout=True, stderr=False))
            (pod_dir / "stderr.log").write_bytes(ctr.logs(stdout=False, stderr=True))
            message = self._termination_message(pod_dir)
        finally:
            with contextlib.suppress(Exception):
                ctr.remove(force=True)
            self._scrub(pod_dir)
        reason = "OOMKilled" if state.get("OOMKilled") else (
            "Completed" if exit_code == 0 else "Error")
        status: dict[str, Any] = {
            "phase": "Succeeded" if exit_code == 0 and outcome in ("", "Deleted") else "Failed",
            "conditions": self._conditions(ready=False, reason="PodCompleted"),
            "containerStatuses": [{**self._container_status(container, {"terminated": {
                "exitCode": exit_code, "reason": reason, "startedAt": _stamp(started_at),
                "finishedAt": _stamp(finished_at), "containerID": container_id,
                **({"message": message} if message else {})}},
                running=False), "containerID": container_id, "imageID": image_id}],
        }
        if outcome == "DeadlineExceeded":
            status.update(reason="DeadlineExceeded",
                          message="Pod was active on the node longer than the specified "
                                  "deadline")
        elif outcome == "Terminated":
            status.update(reason="Terminated",
                          message="Pod was terminated because the wingman dev node harness "
                                  "stopped")
        elif pod["spec"].get("restartPolicy", "Always") != "Never":
            status.update(reason="ContainerExited",
                          message="the container exited; the wingman dev node harness does "
                                  "not restart containers")
            status["phase"] = "Failed"
        run = PodRun(namespace=ns, name=name, uid=uid, argv=argv, exit_code=exit_code,
                     reason=outcome or reason, stdout=pod_dir / "stdout.log",
                     stderr=pod_dir / "stderr.log", started_at=started_at,
                     finished_at=finished_at)
        with self._cond:
            self._runs.append(run)
        log.info("pod %s/%s: container exited %d (%s)", ns, name, exit_code, run.reason)
        self._patch_status(ns, name, status)
        if outcome == "Deleted":
            self._delete_now(ns, name, uid)

    def _await_container(self, pod: dict[str, Any], ctr: Any, active: _Active,
                         started_mono: float) -> str:
        """Wait for the container to exit; stop it on deletion, harness stop or deadline."""
        deadline_s = pod["spec"].get("activeDeadlineSeconds")
        deadline = started_mono + float(deadline_s) if deadline_s else None
        grace = int(min(float(pod["spec"].get("terminationGracePeriodSeconds", 30)),
                        self.kill_grace_seconds))
        while True:
            ctr.reload()
            if ctr.status in ("exited", "dead"):
                return ""
            outcome = ""
            if active.deleted.is_set():
                outcome = "Deleted"
            elif self._stopping.is_set():
                outcome = "Terminated"
            elif deadline is not None and time.monotonic() >= deadline:
                outcome = "DeadlineExceeded"
            if outcome:
                log.info("pod %s/%s: stopping its container (%s)",
                         pod["metadata"]["namespace"], pod["metadata"]["name"], outcome)
                with contextlib.suppress(Exception):
                    ctr.stop(timeout=grace)
                ctr.reload()
                return outcome
            time.sleep(0.2)


def _own(root: Path, gid: int | None, *, read_only: bool) -> None:
    """The kubelet's volume ownership: with an fsGroup, group ``gid`` and group access (read
    for read-only volumes, read-write otherwise; setgid directories); without, directories
    traversable and files as their mode says."""
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode & 0o7777
        if gid is not None:
            os.chown(path, -1, int(gid))
            mode |= 0o440 if read_only else 0o660
            if path.is_dir():
                mode |= 0o2110
        elif path.is_dir():
            mode |= 0o755
        path.chmod(mode)


class _Source:
    """What one pod reads from the API while it is prepared: objects, fields, tokens."""

    def __init__(self, harness: NodeHarness, pod: dict[str, Any]) -> None:
        assert harness._rest is not None
        self._rest = harness._rest
        self.pod = pod
        self.ns = str(pod["metadata"]["namespace"])
        self._cache: dict[tuple[str, str], dict[str, bytes] | None] = {}

    def _object(self, kind: str, name: str, optional: bool) -> dict[str, bytes] | None:
        key = (kind, name)
        if key not in self._cache:
            obj = self._rest.get(f"/api/v1/namespaces/{_q(self.ns)}/{kind}/{_q(name)}")
            if obj is None:
                self._cache[key] = None
            elif kind == "secrets":
                self._cache[key] = {k: base64.b64decode(v)
                                    for k, v in (obj.get("data") or {}).items()}
            else:
                values = {str(k): str(v).encode() for k, v in (obj.get("data") or {}).items()}
                values.update({str(k): base64.b64decode(v)
                               for k, v in (obj.get("binaryData") or {}).items()})
                self._cache[key] = values
        data = self._cache[key]
        if data is None and not optional:
            what = "Secret" if kind == "secrets" else "ConfigMap"
            raise PodRejected(f"{what} {self.ns}/{name} not found", reason="FailedMount",
                              retryable=True)
        return data

    def secret(self, name: str, optional: bool) -> dict[str, bytes] | None:
        return self._object("secrets", name, optional)

    def config_map(self, name: str, optional: bool) -> dict[str, bytes] | None:
        return self._object("configmaps", name, optional)

    def _service_account(self) -> str:
        spec = self.pod["spec"]
        return str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")

    def automount(self) -> bool:
        """Kubernetes' rule: the pod's setting wins, else the ServiceAccount's, else true."""
        value = self.pod["spec"].get("automountServiceAccountToken")
        if value is not None:
            return bool(value)
        sa = self._rest.get(f"/api/v1/namespaces/{_q(self.ns)}/serviceaccounts/"
                            f"{_q(self._service_account())}")
        if sa is not None and sa.get("automountServiceAccountToken") is not None:
            return bool(sa["automountServiceAccountToken"])
        return True

    def token(self, *, audience: str | None, seconds: int) -> str:
        """A real token for the pod's ServiceAccount, bound to the pod (TokenRequest)."""
        meta = self.pod["metadata"]
        spec: dict[str, Any] = {
            "expirationSeconds": seconds,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"],
                               "uid": meta["uid"]}}
        if audience:
            spec["audiences"] = [audience]
        sa = self._service_account()
        try:
            resp = self._rest.call(
                "POST", f"/api/v1/namespaces/{_q(self.ns)}/serviceaccounts/{_q(sa)}/token",
                body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                      "spec": spec})
        except _ApiError as exc:
            raise PodRejected(f"TokenRequest for ServiceAccount {self.ns}/{sa} failed: {exc}",
                              reason="FailedMount", retryable=exc.status == 404) from exc
        token = str(resp.get("status", {}).get("token") or "")
        if not token:
            raise PodRejected(f"TokenRequest for ServiceAccount {self.ns}/{sa} returned no "
                              "token", reason="FailedMount")
        return token

    def field(self, path: str, *, file: bool = False) -> str:
        """The value of a downward-API fieldRef."""
        meta = self.pod["metadata"]
        simple = {
            "metadata.name": meta.get("name", ""),
            "metadata.namespace": self.ns,
            "metadata.uid": meta.get("uid", ""),
            "spec.serviceAccountName": self._service_account(),
            "spec.nodeName": self.pod["spec"].get("nodeName", ""),
            "status.hostIP": LOCAL_IP, "status.podIP": LOCAL_IP,
            "status.hostIPs": LOCAL_IP, "status.podIPs": LOCAL_IP,
        }
        if path in simple:
            return str(simple[path])
        match = _FIELD_KEY.fullmatch(path)
        if match:
            return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
        if file and path in ("metadata.labels", "metadata.annotations"):
            values = meta.get(path.split(".")[1]) or {}
            return "\n".join(f"{k}={json.dumps(str(v))}" for k, v in sorted(values.items()))
        raise PodRejected(f"fieldRef {path!r} is not supported by the wingman dev node harness",
                          reason="CreateContainerConfigError")

    def container_env(self, container: dict[str, Any], base: dict[str, str]
                      ) -> dict[str, str]:
        """The container's declared env (envFrom, then env), resolved in order."""
        out: dict[str, str] = {}
        for src in container.get("envFrom") or []:
            prefix = str(src.get("prefix", ""))
            ref = src.get("configMapRef") or src.get("secretRef") or {}
            optional = bool(ref.get("optional"))
            found = (self.config_map(ref.get("name", ""), optional) if "configMapRef" in src
                     else self.secret(ref.get("name", ""), optional))
            for key, value in (found or {}).items():
                out[prefix + key] = value.decode(errors="replace")
        for var in container.get("env") or []:
            name = str(var["name"])
            if "valueFrom" not in var:
                out[name] = expand(str(var.get("value", "")), {**base, **out})
                continue
            vf = var["valueFrom"]
            if "fieldRef" in vf:
                out[name] = self.field(str(vf["fieldRef"].get("fieldPath", "")))
            elif "secretKeyRef" in vf or "configMapKeyRef" in vf:
                is_secret = "secretKeyRef" in vf
                ref = vf["secretKeyRef" if is_secret else "configMapKeyRef"]
                optional = bool(ref.get("optional"))
                obj_name, key = str(ref.get("name", "")), str(ref.get("key", ""))
                data = (self.secret(obj_name, optional) if is_secret
                        else self.config_map(obj_name, optional))
                if data is None or key not in data:
                    if optional:
                        continue
                    what = "Secret" if is_secret else "ConfigMap"
                    raise PodRejected(f"env {name}: {what} {self.ns}/{obj_name} has no key "
                                      f"{key!r}", reason="CreateContainerConfigError",
                                      retryable=True)
                out[name] = data[key].decode(errors="replace")
            else:
                raise PodRejected(f"env {name}: valueFrom {sorted(vf)} is not supported by the "
                                  "wingman dev node harness",
                                  reason="CreateContainerConfigError")
        return out


__all__ = ["IMAGE_INIT", "NODE_NAME", "NodeHarness", "PodRejected", "PodRun", "build_argv",
           "expand", "rewrite_path"]
