"""The preview's dry-run proxy on the real API server, with an identity that may really write:
only the proxy stands between what kubectl sends and a change.
"""

from __future__ import annotations

import http.client
import json
import ssl
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from wingman.dev.cluster import LocalCluster
from wingman.preview.proxy import DryRunProxy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def deleter(cluster: LocalCluster) -> Iterator[tuple[str, str]]:
    """(namespace, token of a ServiceAccount there that may delete ConfigMaps for real)."""
    ns = f"wm-pxy-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("create", "serviceaccount", "deleter", "-n", ns)
    cluster.kubectl("create", "role", "deleter", "-n", ns, "--verb=get,list,delete",
                    "--resource=configmaps")
    cluster.kubectl("create", "rolebinding", "deleter", "-n", ns, "--role=deleter",
                    f"--serviceaccount={ns}:deleter")
    try:
        yield ns, cluster.sa_token(ns, "deleter")
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _send(proxy: DryRunProxy, method: str, path: str, body: bytes | None,
          content_type: str = "application/json") -> tuple[int, bytes]:
    context = ssl.create_default_context(cadata=proxy.certificate.decode())
    host, port = proxy.url.rsplit("//", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {proxy.nonce}", "Content-Type": content_type}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize(("body", "content_type"), [
    (b'{"kind":"DeleteOptions","apiVersion":"v1"}', "application/json"),
    (b'{"kind":"DeleteOptions","apiVersion":"v1","dryRun":[]}', "application/json"),
    (b'{"kind":"DeleteOptions","apiVersion":"v1","dryRun":[],"DryRun":[]}', "application/json"),
    (b"kind: DeleteOptions\napiVersion: v1\n", "application/yaml"),
])
def test_a_delete_whose_body_asks_for_no_dry_run_changes_nothing(
        cluster: LocalCluster, deleter: tuple[str, str], body: bytes, content_type: str
) -> None:
    # the API server reads a DELETE's options from its body when it has one and then ignores
    # the query, so a dryRun=All in the query alone would not hold
    ns, token = deleter
    name = f"cm-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "configmap", name, "-n", ns, "--from-literal=a=b")
    with tempfile.TemporaryDirectory() as work, \
            DryRunProxy(cluster.server, cluster.ca_file, token, Path(work)) as proxy:
        proxy.begin()
        status, data = _send(proxy, "DELETE", f"/api/v1/namespaces/{ns}/configmaps/{name}",
                             body, content_type)
        exchanges = proxy.exchanges()
    still = cluster.kubectl("get", "configmap", name, "-n", ns, check=False)
    assert still.returncode == 0, f"the ConfigMap was really deleted ({status} {data[:300]!r})"
    assert len(exchanges) == 1 and exchanges[0].method == "DELETE"
    if content_type == "application/json":
        assert status == 200 and exchanges[0].ok, (status, data[:300])  # the dry run
    else:
        assert status == 403 and exchanges[0].refused, (status, data[:300])
        assert "JSON" in json.loads(data)["message"]
