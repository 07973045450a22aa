"""A real, local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager.

Used by the integration and end-to-end tests and by ``wingman dev run`` when no cluster is
configured. It is the real thing, not a fake: the API server serves TLS on loopback with RBAC
authorization, issues ServiceAccount tokens (TokenRequest works), runs the
ValidatingAdmissionPolicy admission plugin, and kube-controller-manager runs the Job,
garbage-collector, namespace and ServiceAccount controllers (with per-controller credentials,
so the Job controller acts as ``system:serviceaccount:kube-system:job-controller``).

Ports: etcd serves on unix sockets in the working directory and kube-controller-manager serves
no endpoint, so only the API server binds a TCP port; it is picked free, and the API server is
started again on another when a process took it first ("address already in use").

A real node (kubelet, kube-proxy, kube-scheduler, containerd: ``wingman.dev.kubelet``) joins
a cluster started with ``nodes=True`` on an address the node's network reaches; without one,
``wingman.dev.node`` plays the node for gateway pods.

Identities: every user is a real x509 client certificate signed by the cluster CA
(CN = user name, O = groups), so the API server authenticates them exactly as it would a
person; ServiceAccounts get real tokens through TokenRequest.

    with LocalCluster.start() as cluster:
        cluster.kubectl("get", "ns")
        cluster.kubectl("auth", "can-i", "create", "pods", user="alice", groups=["dev"])
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wingman.dev import tools as devtools
from wingman.dev.processes import stop_group
from wingman.errors import ClusterError

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
CONTROLLERS = (
    "job-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "ttl-after-finished-controller",
    "deployment-controller",
    "replicaset-controller",
    "clusterrole-aggregation-controller",
    "validatingadmissionpolicy-status-controller",
)
#: What a cluster with real nodes needs besides: node-lifecycle marks nodes (un)ready and lifts
#: the not-ready taint a kubelet registers with; the PersistentVolume binder binds claims.
NODE_CONTROLLERS = (
    "node-lifecycle-controller",
    "persistentvolume-binder-controller",
)


#: etcd's client and peer sockets: unix sockets in the working directory (etcd and
#: kube-apiserver run there), named as etcd's flags want them (``unix://NAME:PORT``, the whole
#: ``NAME:PORT`` being the socket's file name): no TCP port to pick, so none another process
#: can take between picking and binding it (etcd makes them 0755: the working directory's
#: mode, 0700 when it is a temporary one, is what keeps other users out).
ETCD_CLIENT_URL = "unix://etcd-client.sock:0"
ETCD_PEER_URL = "unix://etcd-peer.sock:0"
#: How many ports kube-apiserver is started on before giving up, when each was taken by
#: another process between being picked and being bound ("address already in use").
APISERVER_PORT_TRIES = 5


def _free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listened on a moment ago: the API server's. Picking one and then having
    kube-apiserver bind it races with every other process binding ports, so the start is
    retried on a new one when it was taken in between (see ``LocalCluster._boot``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _PortTaken(ClusterError):
    """kube-apiserver could not bind its port: another process holds it."""

    def __init__(self, port: str, tail: str) -> None:
        super().__init__(f"kube-apiserver could not listen on port {port}: another process "
                         f"holds it; its log:\n{tail}")
        self.port = port


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class _CA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls) -> _CA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wingman-local-ca")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def issue(
        self,
        common_name: str,
        organizations: Sequence[str] = (),
        *,
        server_names: Sequence[str] = (),
        server_ips: Sequence[str] = (),
    ) -> tuple[bytes, bytes]:
        """A leaf certificate and its key, both PEM."""
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if server_names or server_ips:
            sans: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
            sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in server_ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            usage = [ExtendedKeyUsageOID.SERVER_AUTH]
        else:
            usage = [ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class LocalCluster:
    """A running local control plane; create it with :meth:`start`, end it with :meth:`stop`."""

    workdir: Path
    server: str
    kubeconfig: Path
    _ca: _CA
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _user_kubeconfigs: dict[tuple[str, tuple[str, ...]], Path] = field(default_factory=dict)
    _owns_workdir: bool = True
    _audit: bool = False
    _argv: dict[str, list[str]] = field(default_factory=dict)
    address: str = "127.0.0.1"
    nodes: bool = False

    @property
    def audit_log_path(self) -> Path:
        return self.workdir / "apiserver-audit.jsonl"

    def pid(self, component: str) -> int | None:
        """The process id of ``etcd``, ``kube-apiserver`` or ``kube-controller-manager``."""
        proc = self._procs.get(component)
        return proc.pid if proc is not None and proc.poll() is None else None

    def pause(self, component: str) -> None:
        """SIGSTOP a component (an outage that keeps its state); :meth:`resume` ends it."""
        proc = self._procs[component]
        os.killpg(proc.pid, signal.SIGSTOP)

    def resume(self, component: str) -> None:
        proc = self._procs[component]
        os.killpg(proc.pid, signal.SIGCONT)

    def kill(self, component: str) -> None:
        """SIGKILL a component (an outage); :meth:`restart` starts it again as before."""
        proc = self._procs[component]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def restart(self, component: str, timeout: float = 120.0) -> None:
        """Start a component killed with :meth:`kill` again, with its original arguments.

        kube-apiserver comes back on its own port, which every kubeconfig given out names: when
        another process took that port while it was down, this fails saying so (it cannot move
        to another); free the port and restart it again."""
        running = self.pid(component)
        if running is not None:
            # a second one would not replace it: a second kube-apiserver fails on the port the
            # first holds; a second etcd replaces the first's socket files and then waits for
            # its data directory's lock, serving nothing, so new connections to etcd hang; and
            # the first would run on untracked, outliving stop()
            raise ClusterError(f"{component} is running (pid {running}): kill it first "
                               f"(LocalCluster.kill), then restart it")
        self._spawn(component, self._argv[component])
        if component == "kube-apiserver":
            try:
                self._wait_ready(timeout)
            except _PortTaken as exc:
                raise ClusterError(
                    f"kube-apiserver could not listen on its port {exc.port} again: another "
                    f"process took it while kube-apiserver was stopped. The kubeconfigs given "
                    f"out name that port, so kube-apiserver cannot move to another: stop the "
                    f"process holding it ('ss -ltnp' names it) and restart kube-apiserver. "
                    f"{exc}") from None

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def start(cls, workdir: Path | None = None, *, timeout: float = 120.0,
              audit_log: bool = False, address: str = "127.0.0.1",
              nodes: bool = False) -> LocalCluster:
        """Start etcd, kube-apiserver and kube-controller-manager; wait until they serve.

        With ``audit_log`` the API server writes every request's metadata (user, verb,
        resource, response code) as JSON lines to :attr:`audit_log_path`, which the benchmarks
        count API requests from.

        ``address`` is the one the API server listens on and advertises (the endpoint of the
        ``kubernetes`` Service); loopback unless real nodes must reach it. With ``nodes`` the
        cluster is ready for kubelets (``wingman.dev.kubelet``): the Node authorizer and the
        NodeRestriction admission plugin (a node's credentials reach only its own pods and
        their Secrets), the node-lifecycle and PersistentVolume binder controllers, and the API
        server's client certificate for the kubelets' API (logs, exec)."""
        devtools.provision()
        owns = workdir is None
        # absolute: the components run in it (etcd's sockets are named relative to it), and
        # every path in their arguments must name the same file from there
        wd = Path(tempfile.mkdtemp(prefix="wingman-cluster-")) if workdir is None else (
            workdir.absolute())
        wd.mkdir(parents=True, exist_ok=True)
        ca = _CA.create()
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ClusterError(f"the API server address must be an IP address, got "
                               f"{address!r}") from None
        cluster = cls(wd, "", wd / "admin.kubeconfig", ca, _owns_workdir=owns,
                      address=address, nodes=nodes)
        cluster._audit = audit_log
        try:
            cluster._boot(timeout)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _write(self, name: str, data: bytes, mode: int = 0o600) -> Path:
        path = self.workdir / name
        path.write_bytes(data)
        path.chmod(mode)
        return path

    def _spawn(self, name: str, argv: list[str]) -> None:
        """Start a component in its own session; ``setpriv --pdeathsig KILL`` (util-linux)
        stops it when the thread that started it dies, even by SIGKILL, so a killed test run,
        bench or ``wingman dev run`` leaves no control plane behind. KILL, not TERM: with its
        owner gone nobody waits for a graceful stop, and after TERM etcd took up to 7 s and
        kube-apiserver up to 21 s on an idle machine, over a minute on a loaded one (etcd's
        write-ahead log makes a hard stop safe; ``stop`` still stops them gracefully)."""
        self._argv[name] = argv
        setpriv = next((p for p in ("/usr/bin/setpriv", "/bin/setpriv")
                        if os.access(p, os.X_OK)), None) or shutil.which("setpriv")
        if setpriv is None:
            log.warning("setpriv (util-linux) is not installed: %s will outlive this process "
                        "if it is killed with SIGKILL", name)
        command = [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else argv
        logfile = open(self.workdir / f"{name}.log", "ab")
        try:
            proc = subprocess.Popen(
                command, stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.workdir,
            )
        finally:
            logfile.close()
        self._procs[name] = proc

    def _check_alive(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                tail = self.log_tail(name)
                port = self._argv[name][self._argv[name].index("--secure-port") + 1] if (
                    name == "kube-apiserver") else ""
                if port and f":{port}: bind: address already in use" in tail:
                    raise _PortTaken(port, tail)
                raise ClusterError(
                    f"{name} exited with code {proc.returncode} during start-up; "
                    f"last lines of its log ({self.workdir / (name + '.log')}):\n{tail}",
                )

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _boot(self, timeout: float) -> None:
        wd = self.workdir
        ca_path = self._write("ca.crt", self._ca.cert_pem, 0o644)
        ca_key_path = self._write("ca.key", _pem_key(self._ca.key))
        crt, key = self._ca.issue(
            "kube-apiserver",
            server_names=["localhost", "kubernetes", "kubernetes.default",
                          "kubernetes.default.svc"],
            server_ips=list(dict.fromkeys(["127.0.0.1", "10.0.0.1", self.address])),
        )
        self._write("apiserver.crt", crt, 0o644)
        self._write("apiserver.key", key)
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._write("sa.key", _pem_key(sa_key))
        self._write(
            "sa.pub",
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            0o644,
        )
        kcm_kubeconfig = wd / "kcm.kubeconfig"
        self._spawn("etcd", [
            str(devtools.tool_path("etcd")),
            "--data-dir", str(wd / "etcd"),
            "--listen-client-urls", ETCD_CLIENT_URL, "--advertise-client-urls", ETCD_CLIENT_URL,
            "--listen-peer-urls", ETCD_PEER_URL,
            "--initial-advertise-peer-urls", ETCD_PEER_URL,
            "--initial-cluster", f"default={ETCD_PEER_URL}",
            "--unsafe-no-fsync", "--quota-backend-bytes", str(4 * 1024**3),
            "--log-level", "warn",
        ])
        for attempt in range(1, APISERVER_PORT_TRIES + 1):
            port = _free_port(self.address)
            host = f"[{self.address}]" if ":" in self.address else self.address
            self.server = f"https://{host}:{port}"
            self._write_kubeconfig(self.kubeconfig, "admin", ["system:masters"])
            self._write_kubeconfig(kcm_kubeconfig, "system:kube-controller-manager", [])
            self._spawn_apiserver(port)
            try:
                self._wait_ready(timeout)
                break
            except _PortTaken as exc:
                del self._procs["kube-apiserver"]
                if attempt == APISERVER_PORT_TRIES:
                    raise ClusterError(
                        f"kube-apiserver could not listen on any of {attempt} ports picked for "
                        f"it: each was taken by another process before it bound it; free up "
                        f"ports or stop what keeps taking them. The last try: {exc}") from None
                log.info("kube-apiserver's port %d was taken before it bound it: starting it "
                         "on another", port)
        self._spawn("kube-controller-manager", [
            str(devtools.tool_path("kube-controller-manager")),
            "--kubeconfig", str(kcm_kubeconfig),
            "--authentication-kubeconfig", str(kcm_kubeconfig),
            "--authorization-kubeconfig", str(kcm_kubeconfig),
            "--use-service-account-credentials=true",
            "--service-account-private-key-file", str(wd / "sa.key"),
            "--root-ca-file", str(ca_path),
            "--cluster-signing-cert-file", str(ca_path),
            "--cluster-signing-key-file", str(ca_key_path),
            "--controllers", ",".join(CONTROLLERS + (NODE_CONTROLLERS if self.nodes else ())),
            "--leader-elect=false",
            # its health and metrics endpoint: nothing reads it (readiness is the default
            # ServiceAccount it makes), and a port picked for it could be taken before it binds
            "--secure-port", "0",
            "--concurrent-job-syncs", "10",
            # the default client rate (20 requests/s, bursts of 30) lets the Job controller
            # start and end about 5 Jobs a second: soaks release more gateway Jobs than that
            "--kube-api-qps", "200", "--kube-api-burst", "400",
            "--v", "1",
        ])
        self._wait_controllers(timeout)

    def _spawn_apiserver(self, port: int) -> None:
        wd = self.workdir
        self._spawn("kube-apiserver", [
            str(devtools.tool_path("kube-apiserver")),
            "--etcd-servers", ETCD_CLIENT_URL,
            "--bind-address", self.address, "--advertise-address", self.address,
            "--secure-port", str(port),
            "--tls-cert-file", str(wd / "apiserver.crt"),
            "--tls-private-key-file", str(wd / "apiserver.key"),
            "--client-ca-file", str(wd / "ca.crt"),
            "--authorization-mode", "Node,RBAC" if self.nodes else "RBAC",
            "--service-account-issuer", SERVICE_ACCOUNT_ISSUER,
            "--service-account-key-file", str(wd / "sa.pub"),
            "--service-account-signing-key-file", str(wd / "sa.key"),
            "--api-audiences", SERVICE_ACCOUNT_ISSUER,
            "--service-cluster-ip-range", "10.0.0.0/24",
            "--enable-admission-plugins", "ValidatingAdmissionPolicy,NamespaceLifecycle,"
            "ServiceAccount" + (",NodeRestriction" if self.nodes else ""),
            "--allow-privileged=true",
            "--cert-dir", str(wd / "certs"),
            *self._audit_flags(),
            *self._kubelet_client_flags(),
            "--v", "1",
        ])

    def _kubelet_client_flags(self) -> list[str]:
        """The API server's identity towards kubelets (pod logs, exec), with real nodes."""
        if not self.nodes:
            return []
        crt, key = self._ca.issue("kube-apiserver-kubelet-client", ["system:masters"])
        return ["--kubelet-preferred-address-types", "InternalIP",
                "--kubelet-client-certificate",
                str(self._write("apiserver-kubelet-client.crt", crt, 0o644)),
                "--kubelet-client-key", str(self._write("apiserver-kubelet-client.key", key))]

    def _audit_flags(self) -> list[str]:
        if not self._audit:
            return []
        policy = self._write("audit-policy.yaml", yaml.safe_dump({
            "apiVersion": "audit.k8s.io/v1", "kind": "Policy",
            "omitStages": ["RequestReceived", "ResponseStarted"],
            "rules": [{"level": "Metadata"}]}).encode(), 0o644)
        return ["--audit-policy-file", str(policy), "--audit-log-path",
                str(self.audit_log_path), "--audit-log-format", "json",
                "--audit-log-mode", "batch", "--audit-log-batch-max-wait", "1s",
                # the default buffer (10,000 events) overflows in a burst of thousands of
                # objects, and the batch backend then drops events: the counts would be short
                "--audit-log-batch-buffer-size", "200000", "--audit-log-maxsize", "0"]

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.workdir / "ca.crt"))
        crt = self.workdir / "admin.crt"
        ctx.load_cert_chain(str(crt), str(self.workdir / "admin.key"))
        return ctx

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with urllib.request.urlopen(  # noqa: S310 - loopback URL we built
                    f"{self.server}/readyz", context=self._ssl_context(), timeout=5
                ) as resp:
                    if resp.status == 200:
                        return
            except OSError as exc:
                last = str(exc)
            time.sleep(0.3)
        raise ClusterError(
            f"kube-apiserver did not become ready within {timeout:.0f}s ({last}); "
            f"its log:\n{self.log_tail('kube-apiserver')}"
        )

    def _wait_controllers(self, timeout: float) -> None:
        """Wait until the ServiceAccount controller has made `default` in `default`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            result = self.kubectl("get", "serviceaccount", "default", "-n", "default",
                                  check=False)
            if result.returncode == 0:
                return
            time.sleep(0.5)
        raise ClusterError(
            f"kube-controller-manager did not start its controllers within {timeout:.0f}s; "
            f"its log:\n{self.log_tail('kube-controller-manager')}"
        )

    def stop(self) -> None:
        """Stop every process (TERM, then KILL) and remove the working directory."""
        for name in reversed(list(self._procs)):
            stop_group(self._procs[name])
        self._procs.clear()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ identities

    def _write_kubeconfig(self, path: Path, user: str, groups: Sequence[str]) -> None:
        safe = base64.b32encode(user.encode()).decode().rstrip("=").lower()
        crt, key = self._ca.issue(user, groups)
        stem = "admin" if user == "admin" else f"user-{safe}-{len(self._user_kubeconfigs)}"
        crt_path = self._write(f"{stem}.crt", crt, 0o644)
        key_path = self._write(f"{stem}.key", key)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {
                "server": self.server, "certificate-authority": str(self.workdir / "ca.crt")}}],
            "users": [{"name": user, "user": {
                "client-certificate": str(crt_path), "client-key": str(key_path)}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
            "current-context": "local",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)

    def kubeconfig_for(self, user: str | None = None, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig authenticating as ``user`` in ``groups`` (admin when user is None)."""
        if user is None:
            return self.kubeconfig
        key = (user, tuple(groups))
        if key not in self._user_kubeconfigs:
            path = self.workdir / f"user-{len(self._user_kubeconfigs)}.kubeconfig"
            self._write_kubeconfig(path, user, groups)
            self._user_kubeconfigs[key] = path
        return self._user_kubeconfigs[key]

    def token_kubeconfig(self, token: str, name: str = "token-user") -> Path:
        """A kubeconfig that authenticates with a bearer token (e.g. a ServiceAccount's)."""
        path = Path(tempfile.mkstemp(prefix="kubeconfig-", dir=self.workdir)[1])
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {
                "server": self.server, "certificate-authority": str(self.workdir / "ca.crt")}}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": name}}],
            "current-context": "local",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.crt"

    def api_client(self, user: str | None = None, groups: Sequence[str] = ()) -> Any:
        """A ``kubernetes.client.ApiClient`` authenticated as ``user`` (admin when None)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig_for(user, groups)))

    def sa_token(
        self, namespace: str, name: str, *, audiences: Sequence[str] = (),
        expiration_seconds: int = 3600, pod: tuple[str, str] | None = None,
    ) -> str:
        """A real ServiceAccount token issued by the API server through TokenRequest; with
        ``pod`` (name, uid), bound to that pod as the kubelet's projected tokens are (the API
        server then names the pod in the caller's user info)."""
        from kubernetes import client

        with self.api_client() as api:
            bound = None if pod is None else client.V1BoundObjectReference(
                api_version="v1", kind="Pod", name=pod[0], uid=pod[1])
            body = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
                audiences=list(audiences) or [SERVICE_ACCOUNT_ISSUER],
                expiration_seconds=expiration_seconds, bound_object_ref=bound,
            ))
            resp = client.CoreV1Api(api).create_namespaced_service_account_token(
                name, namespace, body
            )
            if resp.status is None or not resp.status.token:
                raise ClusterError(f"TokenRequest for {namespace}/{name} returned no token")
            return str(resp.status.token)

    # ------------------------------------------------------------------ tools

    def tool(self, name: str) -> Path:
        return devtools.tool_path(name)

    def env(self, kubeconfig: Path | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(kubeconfig or self.kubeconfig)
        env.pop("KUBERNETES_SERVICE_HOST", None)
        return env

    def kubectl(
        self,
        *args: str,
        user: str | None = None,
        groups: Sequence[str] = (),
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl as ``user`` (a real client certificate), admin by default."""
        kubeconfig = self.kubeconfig_for(user, groups)
        result = subprocess.run(
            [str(devtools.tool_path("kubectl")), "--kubeconfig", str(kubeconfig), *args],
            input=input, capture_output=True, text=True, timeout=timeout, env=self.env(kubeconfig),
        )
        if check and result.returncode != 0:
            raise ClusterError(
                f"kubectl {' '.join(args)} failed (exit {result.returncode}): "
                f"{result.stderr.strip()}"
            )
        return result

    def helm(self, *args: str, check: bool = True, timeout: float = 180) -> (
        subprocess.CompletedProcess[str]
    ):
        """Run the real helm against this cluster as admin."""
        result = subprocess.run(
            [str(devtools.tool_path("helm")), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True, text=True, timeout=timeout, env=self.env(),
        )
        if check and result.returncode != 0:
            raise ClusterError(
                f"helm {' '.join(args)} failed (exit {result.returncode}): "
                f"{result.stderr.strip()}"
            )
        return result

    def apply_crds(self, crd_dir: Path, timeout: float = 60) -> None:
        """Apply every CRD in ``crd_dir`` and wait until every CRD of the cluster is Established.

        Read by polling, not ``kubectl wait``: a CRD the API server has stored but not yet given
        any condition fails the wait at once (``.status.conditions accessor error``) on a
        loaded control plane, where it should wait."""
        self.kubectl("apply", "--server-side", "-f", str(crd_dir))
        deadline = time.monotonic() + timeout
        while True:
            listed = json.loads(self.kubectl("get", "crd", "-o", "json").stdout)
            waiting = sorted(
                crd["metadata"]["name"] for crd in listed.get("items", [])
                if not any(c.get("type") == "Established" and c.get("status") == "True"
                           for c in (crd.get("status") or {}).get("conditions") or []))
            if not waiting:
                return
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"CRDs not Established {timeout:.0f} s after they were applied: "
                    f"{', '.join(waiting)}; see 'kubectl describe crd NAME' (its conditions "
                    "say what the API server is waiting for)")
            time.sleep(0.5)


@contextlib.contextmanager
def running(workdir: Path | None = None) -> Iterator[LocalCluster]:
    """Context manager: a started LocalCluster, stopped on exit."""
    cluster = LocalCluster.start(workdir)
    try:
        yield cluster
    finally:
        cluster.stop()


__all__ = ["NODE_CONTROLLERS", "SERVICE_ACCOUNT_ISSUER", "LocalCluster", "running"]
