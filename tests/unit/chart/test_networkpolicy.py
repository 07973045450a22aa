"""NetworkPolicies, rendered by the real helm from values: each Wingman pod may reach only what
it needs, and the policies select exactly the pods the chart and the operator make.

The policies are only as good as their selectors, so the gateway's is checked against the Job
the operator actually builds (from the settings the chart gives it), and the operator's and the
chat's against their rendered Deployments. The API server validates these objects in the
integration tier (prd values enable them) and kubeconform checks them against strict schemas.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from support.chart import env_values, find, render
from support.conformance import assert_conforms
from wingman.operator import manifests
from wingman.settings import OperatorSettings

NS = "wingman-prd"
API = ["10.0.0.10/32", "10.0.0.11/32"]
DB = ["10.1.2.3/32"]
LLM = ["203.0.113.50/32"]
MONITORING = [{"namespaceSelector": {"matchLabels": {
    "kubernetes.io/metadata.name": "monitoring"}}}]
CHAT = {"chat.enabled": True,
        "chat.webhook": {"enabled": True, "url": "https://hooks.example.com/wingman"},
        "chat.stepUp": {"enabled": False}}
ON: dict[str, Any] = {"networkPolicy.apiServer.cidrs": API,
                      "networkPolicy.database.cidrs": DB,
                      "networkPolicy.metricsFrom": MONITORING}


def _policies(values: dict[str, Any], env: str = "prd") -> tuple[list[dict[str, Any]],
                                                                  dict[str, dict[str, Any]]]:
    objs = render(env, values, namespace=NS)
    return objs, {p["metadata"]["name"]: p for p in find(objs, "NetworkPolicy")}


def _egress(policy: dict[str, Any]) -> set[tuple[str, int | str]]:
    """(destination, port) pairs: an ipBlock CIDR, or 'dns' for the DNS peers."""
    out: set[tuple[str, int | str]] = set()
    for rule in policy["spec"]["egress"]:
        for peer in rule["to"]:
            dest = peer["ipBlock"]["cidr"] if "ipBlock" in peer else "dns"
            out |= {(dest, p["port"]) for p in rule["ports"]}
    return out


def _selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    return bool(policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items())


def _operator_settings(objs: list[dict[str, Any]], tmp_path: Path) -> OperatorSettings:
    (deployment,) = find(objs, "Deployment", "wingman-operator")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    policy = tmp_path / "policy.yaml"
    (cm,) = find(objs, "ConfigMap", "wingman-policy")
    policy.write_text(cm["data"]["policy.yaml"])
    return OperatorSettings.from_env({**env, "WINGMAN_NAMESPACE": NS,
                                      "WINGMAN_POLICY_FILE": str(policy)})


@pytest.mark.parametrize("env", [None, "test"])
def test_off_unless_enabled_and_on_in_prd(env: str | None) -> None:
    assert not find(render(env, namespace=NS), "NetworkPolicy")
    assert env_values("prd")["networkPolicy"]["enabled"] is True
    _, policies = _policies({})
    assert set(policies) == {"wingman-operator", "wingman-gateway", "wingman-preview"}


def test_gateway_pods_get_no_ingress_and_reach_only_the_api_server(tmp_path: Path) -> None:
    objs, policies = _policies({**ON, "audit.type": "file"})
    gateway = policies["wingman-gateway"]
    assert gateway["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert gateway["spec"]["ingress"] == []
    assert _egress(gateway) == {(c, p) for c in API for p in (443, 6443)}
    # it selects the pods of the Job the operator really builds, and nothing the chart runs
    job = manifests.gateway_job({"metadata": {"name": "g", "namespace": NS, "uid": "u"}},
                                _operator_settings(objs, tmp_path), 300)
    assert _selects(gateway, job["spec"]["template"]["metadata"]["labels"])
    for deployment in find(objs, "Deployment"):
        assert not _selects(gateway, deployment["spec"]["template"]["metadata"]["labels"])


def test_preview_pods_get_no_ingress_and_reach_only_the_api_server(tmp_path: Path) -> None:
    """Preview Jobs run requested commands (as dry runs) with the preview identity: like the
    gateway's, their pods reach the API server and nothing else, whatever the audit store."""
    for audit in ("postgres", "file"):
        objs, policies = _policies({**ON, "audit.type": audit})
        preview = policies["wingman-preview"]
        assert preview["spec"]["policyTypes"] == ["Ingress", "Egress"]
        assert preview["spec"]["ingress"] == []
        assert _egress(preview) == {(c, p) for c in API for p in (443, 6443)}
    job = manifests.preview_job({"metadata": {"name": "r", "namespace": NS, "uid": "u"}},
                                _operator_settings(objs, tmp_path))
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert _selects(preview, labels)
    assert not _selects(policies["wingman-gateway"], labels)
    for deployment in find(objs, "Deployment"):
        assert not _selects(preview, deployment["spec"]["template"]["metadata"]["labels"])
    # no previews, no preview policy
    assert "wingman-preview" not in _policies({**ON, "policy.preview.enabled": False})[1]


def test_with_postgres_the_gateway_also_reaches_the_database_and_dns() -> None:
    _, policies = _policies({**ON, "networkPolicy.database.port": 6432})
    assert _egress(policies["wingman-gateway"]) == (
        {(c, p) for c in API for p in (443, 6443)} | {(DB[0], 6432)}
        | {("dns", 53)})


def test_the_operator_takes_only_scrapes_and_reaches_what_it_uses() -> None:
    objs, policies = _policies(ON)
    operator = policies["wingman-operator"]
    (deployment,) = find(objs, "Deployment", "wingman-operator")
    pod = deployment["spec"]["template"]
    assert _selects(operator, pod["metadata"]["labels"])
    (ingress,) = operator["spec"]["ingress"]
    assert ingress["from"] == MONITORING
    named = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    assert {p["port"] for p in ingress["ports"]} == {"metrics", "health"} == named
    assert _egress(operator) == ({(c, p) for c in API for p in (443, 6443)}
                                 | {(DB[0], 5432), ("dns", 53)})
    # nobody may scrape when metricsFrom is empty: no ingress rule at all
    _, closed = _policies({**ON, "networkPolicy.metricsFrom": []})
    assert closed["wingman-operator"]["spec"]["ingress"] == []


def test_llm_voters_open_their_endpoints_to_the_operator_only() -> None:
    voters = [{"type": "builtin", "name": "destructive"},
              {"type": "openai", "name": "gpt", "model": "m", "apiKeySecretKey": "k"}]
    _, policies = _policies({**ON, "policy.panel.voters": voters, "policy.panel.threshold": 1,
                             "policy.panel.quorum": 1, "networkPolicy.llm.cidrs": LLM,
                             "networkPolicy.llm.ports": [8443]})
    assert (LLM[0], 8443) in _egress(policies["wingman-operator"])
    assert not any(c == LLM[0] for c, _ in _egress(policies["wingman-gateway"]))
    _, builtin_only = _policies({**ON, "networkPolicy.llm.cidrs": LLM})
    assert not any(c == LLM[0] for c, _ in _egress(builtin_only["wingman-operator"]))


def test_an_audit_witness_is_reachable_by_the_operator_only() -> None:
    witness = {"audit.checkpoints.witness.url": "https://witness.example/checkpoints",
               "audit.checkpoints.witness.secretName": "wingman-audit-witness"}
    _, policies = _policies({**ON, **witness, "networkPolicy.witness.cidrs": ["198.51.100.7/32"],
                             "networkPolicy.witness.ports": [8470]})
    assert ("198.51.100.7/32", 8470) in _egress(policies["wingman-operator"])
    assert not any(c == "198.51.100.7/32" for c, _ in _egress(policies["wingman-gateway"]))
    _, without = _policies({**ON, "networkPolicy.witness.cidrs": ["198.51.100.7/32"]})
    assert not any(c == "198.51.100.7/32" for c, _ in _egress(without["wingman-operator"]))


def test_the_chat_pod_uses_the_same_building_blocks() -> None:
    nginx = [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "ingress-nginx"}}}]
    objs, policies = _policies({**ON, **CHAT, "chat.networkPolicy.ingressFrom": nginx,
                                "chat.networkPolicy.egressCIDRs": ["192.0.2.0/24"],
                                "chat.networkPolicy.egressPorts": [443, 8443]})
    chat = policies["wingman-chat"]
    (deployment,) = find(objs, "Deployment", "wingman-chat")
    assert _selects(chat, deployment["spec"]["template"]["metadata"]["labels"])
    assert not _selects(policies["wingman-operator"],
                        deployment["spec"]["template"]["metadata"]["labels"])
    http, metrics = chat["spec"]["ingress"]
    assert (http["from"], [p["port"] for p in http["ports"]]) == (nginx, ["http"])
    assert (metrics["from"], [p["port"] for p in metrics["ports"]]) == (MONITORING, ["metrics"])
    assert _egress(chat) == ({(c, p) for c in API for p in (443, 6443)}
                             | {(DB[0], 5432), ("dns", 53)}
                             | {("192.0.2.0/24", 443), ("192.0.2.0/24", 8443)})
    # chat disabled: no chat policy
    assert "wingman-chat" not in _policies(ON)[1]


@pytest.mark.parametrize(("values", "complaint"), [
    ({"networkPolicy.apiServer.cidrs": []}, "needs networkPolicy.apiServer.cidrs"),
    ({"networkPolicy.database.cidrs": []}, "needs networkPolicy.database.cidrs"),
    ({"policy.panel.voters": [{"type": "anthropic", "name": "claude", "model": "m",
                               "apiKeySecretKey": "k"}], "policy.panel.threshold": 1,
      "policy.panel.quorum": 1}, "needs networkPolicy.llm.cidrs"),
    ({"audit.checkpoints.witness.url": "https://witness.example/checkpoints",
      "audit.checkpoints.witness.secretName": "w"}, "needs networkPolicy.witness.cidrs"),
])
def test_missing_addresses_fail_with_instructions(values: dict[str, Any],
                                                  complaint: str) -> None:
    from support.chart import helm, template_args

    result = helm(*template_args("prd", {**ON, **values}, namespace=NS), check=False)
    assert result.returncode != 0 and complaint in result.stderr, result.stderr


@pytest.mark.parametrize(("values", "complaint"), [
    ({"networkPolicy.apiServer.cidrs": ["kubernetes.default.svc"]},
     "/networkPolicy/apiServer/cidrs/0"),
    # what the API server would refuse halfway through an install
    ({"networkPolicy.apiServer.cidrs": ["10.0.0.300/32"]}, "/networkPolicy/apiServer/cidrs/0"),
    ({"networkPolicy.database.cidrs": ["10.0.0.3/33"]}, "/networkPolicy/database/cidrs/0"),
    ({"networkPolicy.llm.cidrs": ["2001:db8::1/129"]}, "/networkPolicy/llm/cidrs/0"),
    ({"chat.networkPolicy.egressCIDRs": ["192.0.2.1"]}, "/chat/networkPolicy/egressCIDRs/0"),
    ({"networkPolicy.metricsFrom": [{}]}, "/networkPolicy/metricsFrom/0"),
    ({"networkPolicy.metricsFrom": [{"ipBlock": {"cidr": "monitoring"}}]},
     "/networkPolicy/metricsFrom/0/ipBlock/cidr"),
    ({"networkPolicy.dns": [{"namespaceSelector": {"matchLabels": {"name": "kube system"}}}]},
     "/networkPolicy/dns/0/namespaceSelector/matchLabels/name"),
    ({"chat.networkPolicy.ingressFrom": [{"podSelector": {"matchExpressions": [
        {"key": "app", "operator": "Equals", "values": ["x"]}]}}]},
     "/chat/networkPolicy/ingressFrom/0/podSelector/matchExpressions/0/operator"),
])
def test_bad_addresses_are_refused_by_the_schema(values: dict[str, Any], complaint: str) -> None:
    from support.chart import helm, template_args

    result = helm(*template_args("prd", {**ON, **values}, namespace=NS), check=False)
    assert result.returncode != 0, "helm accepted invalid values"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr, result.stderr


def test_a_peer_with_an_ip_block_and_a_selector_fails_with_instructions() -> None:
    from support.chart import helm, template_args

    peer = {"ipBlock": {"cidr": "10.0.0.0/8"},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    result = helm(*template_args("prd", {**ON, "networkPolicy.metricsFrom": [peer]},
                                 namespace=NS), check=False)
    assert result.returncode != 0
    assert "networkPolicy.metricsFrom[0] has an ipBlock and a selector" in result.stderr


def test_peers_and_cidrs_of_every_form_render() -> None:
    objs, _ = _policies({**ON, "networkPolicy.apiServer.cidrs": ["2001:db8::1/128", "10.0.0.1/32"],
                         "networkPolicy.metricsFrom": [
                             {"namespaceSelector": {"matchLabels": {"team": "obs"}},
                              "podSelector": {"matchExpressions": [
                                  {"key": "app", "operator": "In", "values": ["prometheus"]}]}},
                             {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]})
    assert_conforms(objs)
