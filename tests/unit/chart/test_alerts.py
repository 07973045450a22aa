"""The chart's monitoring: PrometheusRule alerts, ServiceMonitor and Grafana dashboard.

Real helm renders the chart (no cluster) and the real promtool checks and unit-tests the
rendered rules (``tests/unit/alerts/*.yaml``: series in, alerts out). What a user relies on:
each alert fires on the trouble it names and stays quiet on a healthy operator or on another
release's trouble, every alert links to its runbook section, every series an alert or a panel
reads is one the operator exports (``wingman.operator.metrics.Metrics``), and a default install
needs no monitoring CRDs.
"""

from __future__ import annotations

import json
import re
import string
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric

from support.chart import (
    CHART_DIR,
    ENVIRONMENTS,
    REPO,
    env_values,
    find,
    helm,
    render,
    set_args,
    template_args,
    values_file,
)
from wingman.chat.metrics import ChatMetrics
from wingman.dev import tools as devtools
from wingman.operator.metrics import Metrics

ALERTS_DIR = Path(__file__).resolve().parent / "alerts"
DASHBOARD_FILE = CHART_DIR / "dashboards" / "wingman.json"
RUNBOOK = REPO / "docs" / "runbook.md"
CHART_VERSION = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["version"]
#: The runbook of this chart's release: the alerts link to the text that matches them.
DEFAULT_RUNBOOK_URL = (f"https://github.com/wingman-dev/wingman/blob/v{CHART_VERSION}/"
                       "docs/runbook.md")
SCRAPE_JOB = "wingman-operator-metrics"

ALERTS = {
    "WingmanOperatorDown": "critical",
    "WingmanReplayAttempt": "critical",
    "WingmanTokenRejected": "warning",
    "WingmanAuditFailure": "critical",
    "WingmanAuditCheckpointFailed": "critical",
    "WingmanAuditWitnessFailing": "warning",
    "WingmanApprovalBacklog": "warning",
    "WingmanObjectsStuck": "warning",
    "WingmanReconcileErrors": "warning",
    "WingmanGrantFailures": "warning",
    "WingmanDenialSpike": "warning",
    "WingmanRetirementRefused": "warning",
    "WingmanStoreWentBack": "warning",
    "WingmanChatDeliveryFailing": "warning",
    "WingmanChatLoopFailing": "warning",
    "WingmanChatBotTokenRejected": "warning",
}
#: Labels Prometheus attaches to every scraped series (not exported by the operator).
TARGET_LABELS = frozenset({"job", "namespace", "instance", "pod", "service", "container",
                           "endpoint"})
#: The rules, and the chat component whose alert is rendered only with it.
ENABLED = {"metrics.prometheusRule.enabled": True, "chat.enabled": True,
           "chat.webhook": {"enabled": True, "url": "https://hooks.example.com/wingman"}}


def _namespace(env: str) -> str:
    return f"wingman-{env}"


# --------------------------------------------------------------------------- the contract


@dataclass(frozen=True)
class Series:
    """One series name Prometheus stores for a metric of the registry."""

    name: str
    labels: frozenset[str]


def _family(collector: MetricWrapperBase) -> Metric:
    (family,) = collector.describe()
    return family


def exported_series() -> dict[str, Series]:
    """Every series name the operator's and the chat component's registries export, plus
    Prometheus's own ``up``."""
    collectors: list[MetricWrapperBase] = []
    for metrics in (Metrics(), ChatMetrics()):
        mine = [v for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)]
        families = {f.name: f.type for f in metrics.registry.collect()}
        described = {_family(c).name for c in mine}
        assert described == set(families), f"a registered metric is not an attribute of " \
            f"{type(metrics).__name__}"
        collectors += mine
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    out = {"up": Series("up", frozenset())}
    for collector in collectors:
        family = _family(collector)
        # prometheus_client keeps label names only on the (private) attribute.
        labels = frozenset(getattr(collector, "_labelnames"))  # noqa: B009
        for suffix in suffixes[family.type]:
            out[family.name + suffix] = Series(family.name + suffix, labels)
    return out


SERIES = exported_series()


def test_the_contract_is_read_from_the_registry() -> None:
    # The suffix rules above are the ones Prometheus sees: a counter is stored as *_total,
    # a histogram as *_bucket/_sum/_count.
    assert "wingman_denials_total" in SERIES
    assert "wingman_denials" not in SERIES
    assert {"wingman_consensus_duration_seconds_bucket",
            "wingman_consensus_duration_seconds_count"} <= set(SERIES)
    assert SERIES["wingman_denials_total"].labels == {"environment", "stage", "reason"}
    assert SERIES["wingman_reconcile_errors_total"].labels == {"resource"}


# --------------------------------------------------------------------------- PromQL reading

_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_SELECTOR = re.compile(r"(?<![\w.$])([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r'\s*([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(\s*\()?")
_KEYWORDS = frozenset({"and", "or", "unless", "offset", "bool", "inf", "nan", "by", "without",
                       "on", "ignoring", "group_left", "group_right"})


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: dict[str, tuple[str, str]]  # label -> (operator, value)


def selectors(expr: str) -> list[Selector]:
    """The series selectors of a PromQL expression (fails on forms it cannot read)."""
    text = _GROUPING.sub(" ", expr)
    found: list[Selector] = []

    def braces(m: re.Match[str]) -> str:
        name, body = m.group(1), m.group(2)
        assert name, f"selector without a metric name in {expr!r}"
        matchers: dict[str, tuple[str, str]] = {}
        rest = body.strip()
        while rest:
            mm = _MATCHER.match(rest)
            assert mm, f"cannot read matchers {body!r} in {expr!r}"
            matchers[mm.group(1)] = (mm.group(2), mm.group(3))
            rest = rest[mm.end():].strip()
        found.append(Selector(name, matchers))
        return " "

    text = _SELECTOR.sub(braces, text)
    text = _RANGE.sub(" ", _STRING.sub(" ", text))
    for m in _IDENT.finditer(text):
        if m.group(2) is None and m.group(1) not in _KEYWORDS:
            found.append(Selector(m.group(1), {}))
    assert found, f"no series selector in {expr!r}"
    return found


def test_selectors_reads_the_forms_the_chart_uses() -> None:
    got = selectors('sum by (le) (rate(a_bucket{x="1", y=~"$v"}[5m])) / b offset 10m > 0.5')
    assert [(s.metric, s.matchers) for s in got] == [
        ("a_bucket", {"x": ("=", "1"), "y": ("=~", "$v")}), ("b", {})]


def check_contract(expr: str) -> list[Selector]:
    """Assert every series ``expr`` reads is exported, with label names it has."""
    sels = selectors(expr)
    for sel in sels:
        assert sel.metric in SERIES, (
            f"{sel.metric!r} (in {expr!r}) is not exported by wingman.operator.metrics.Metrics "
            "or wingman.chat.metrics.ChatMetrics")
        unknown = set(sel.matchers) - SERIES[sel.metric].labels - TARGET_LABELS
        assert not unknown, f"{sel.metric} has no label(s) {sorted(unknown)} (in {expr!r})"
    return sels


# --------------------------------------------------------------------------- rendering


def rule_objects(env: str | None, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    objs = render(env, {**ENABLED, **(values or {})},
                  namespace=_namespace(env or "test"))
    return find(objs, "PrometheusRule")


def rules_of(env: str, values: dict[str, Any] | None = None) -> dict[str, Any]:
    (rule,) = rule_objects(env, values)
    spec = rule["spec"]
    assert isinstance(spec, dict)
    return spec


def alert_rules(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for group in spec["groups"]:
        yield from (r for r in group["rules"] if "alert" in r)


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(devtools.tool_path("promtool")), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def write_rules(spec: dict[str, Any], directory: Path) -> Path:
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def unit_test(name: str, env: str, spec: dict[str, Any], tmp_path: Path) -> None:
    """Run ``tests/unit/alerts/<name>`` against ``spec`` with promtool."""
    write_rules(spec, tmp_path)
    other = next(e for e in (*ENVIRONMENTS, "other") if e != env)
    text = string.Template((ALERTS_DIR / name).read_text()).substitute(
        ENV=env, NS=_namespace(env), OTHER_ENV=other, OTHER_NS=_namespace(other),
        JOB=SCRAPE_JOB, RUNBOOK=DEFAULT_RUNBOOK_URL)
    (tmp_path / name).write_text(text)
    result = promtool("test", "rules", name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- defaults


@pytest.mark.parametrize("env", [None, *ENVIRONMENTS], ids=["defaults", *ENVIRONMENTS])
def test_default_install_needs_no_monitoring_crds(env: str | None) -> None:
    objs = render(env, namespace=_namespace(env or "test"))
    assert not [o for o in objs if o["apiVersion"].startswith("monitoring.coreos.com/")]
    assert not [o for o in objs
                if o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]


# --------------------------------------------------------------------------- promtool


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_promtool_check_rules_passes(env: str, tmp_path: Path) -> None:
    path = write_rules(rules_of(env), tmp_path)
    result = promtool("check", "rules", path.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_alerts_fire_on_trouble_and_only_then(env: str, tmp_path: Path) -> None:
    unit_test("wingman.yaml", env, rules_of(env), tmp_path)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_thresholds_come_from_values(env: str, tmp_path: Path) -> None:
    spec = rules_of(env, {"metrics.prometheusRule.approvalBacklogSeconds": 600,
                          "metrics.prometheusRule.denialSpikePerSecond": 0.01,
                          "metrics.prometheusRule.stuckObjectSeconds": 900,
                          "operator.resyncSeconds": 120})
    unit_test("thresholds.yaml", env, spec, tmp_path)


def test_extra_rules_are_appended_and_valid(tmp_path: Path) -> None:
    extra = [{"alert": "WingmanNoVotes", "expr": "sum(rate(wingman_votes_total[1h])) == 0",
              "for": "1h", "labels": {"severity": "info"}},
             {"record": "wingman:denials:rate5m",
              "expr": "sum by (environment, reason) (rate(wingman_denials_total[5m]))"}]
    spec = rules_of("test", {"metrics.prometheusRule.extraRules": extra})
    rules = spec["groups"][0]["rules"]
    assert rules[-2:] == extra
    assert [r["alert"] for r in rules[:-2]] == list(ALERTS)
    path = write_rules(spec, tmp_path)
    result = promtool("check", "rules", path.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_recording_rule_with_alert_fields_fails_with_instructions() -> None:
    rule = {"record": "wingman:denials:rate5m", "expr": "sum(rate(wingman_denials_total[5m]))",
            "for": "5m"}
    result = helm("template", "wingman", str(CHART_DIR),
                  *set_args({**ENABLED, "metrics.prometheusRule.extraRules": [rule]}), check=False)
    assert result.returncode != 0
    assert ('metrics.prometheusRule.extraRules[0] records wingman:denials:rate5m but has "for"'
            in result.stderr), result.stderr


# --------------------------------------------------------------------------- rule shape


def _runbook_anchors() -> set[str]:
    """GitHub's anchors of the runbook's ### headings."""
    anchors = set()
    for line in RUNBOOK.read_text().splitlines():
        if line.startswith("### "):
            slug = re.sub(r"[^\w\- ]", "", line[4:].strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_alert_is_labelled_and_documented(env: str) -> None:
    rules = list(alert_rules(rules_of(env)))
    assert {r["alert"]: r["labels"]["severity"] for r in rules} == ALERTS
    anchors = _runbook_anchors()
    for rule in rules:
        assert rule["labels"]["environment"] == env_values(env)["environment"]
        ann = rule["annotations"]
        assert ann["summary"].strip() and ann["description"].strip(), rule["alert"]
        base, _, anchor = ann["runbook_url"].partition("#")
        assert base == DEFAULT_RUNBOOK_URL
        assert anchor == rule["alert"].lower()
        assert anchor in anchors, f"docs/runbook.md has no '### {rule['alert']}' section"


def test_runbook_documents_exactly_the_alerts() -> None:
    text = RUNBOOK.read_text()
    assert text.startswith("# Wingman runbook\n")
    alerts_part = text.split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
    headings = re.findall(r"^### (\S+)$", alerts_part, flags=re.MULTILINE)
    assert headings == list(ALERTS)


def test_runbook_url_and_labels_come_from_values() -> None:
    (rule,) = rule_objects("prd", {
        "metrics.prometheusRule.labels": {"release": "kube-prometheus-stack"},
        "metrics.prometheusRule.runbookUrl": "https://wiki.example.com/wingman",
    })
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["labels"]["wingman.dev/environment"] == "prd"
    assert rule["metadata"]["namespace"] == "wingman-prd"
    for alert in alert_rules(rule["spec"]):
        assert alert["annotations"]["runbook_url"] == (
            f"https://wiki.example.com/wingman#{alert['alert'].lower()}")


def test_the_chat_alerts_are_rendered_only_with_the_chat_component() -> None:
    alerts = [r["alert"] for r in alert_rules(rules_of("prd", {"chat.enabled": False}))]
    assert alerts == [a for a in ALERTS if not a.startswith("WingmanChat")]


def test_each_alert_can_be_switched_off_and_all_carry_extra_labels(tmp_path: Path) -> None:
    off = ["WingmanApprovalBacklog", "WingmanChatDeliveryFailing"]
    spec = rules_of("prd", {"metrics.prometheusRule.disabled": {name: True for name in off},
                            "metrics.prometheusRule.alertLabels": {"team": "platform",
                                                                   "pager": "ops"}})
    rules = list(alert_rules(spec))
    assert [r["alert"] for r in rules] == [a for a in ALERTS if a not in off]
    for rule in rules:
        assert rule["labels"]["team"] == "platform" and rule["labels"]["pager"] == "ops"
        assert rule["labels"]["severity"] == ALERTS[rule["alert"]]
    path = write_rules(spec, tmp_path)
    result = promtool("check", "rules", path.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # false keeps an alert; unknown names and the chart's own labels are refused
    kept = rules_of("prd", {"metrics.prometheusRule.disabled": {"WingmanDenialSpike": False}})
    assert "WingmanDenialSpike" in [r["alert"] for r in alert_rules(kept)]
    for values, complaint in (
            ({"metrics.prometheusRule.disabled": {"WingmanOperatorDwn": True}},
             "invalid propertyName 'WingmanOperatorDwn'"),
            ({"metrics.prometheusRule.alertLabels": {"severity": "info"}},
             "invalid propertyName 'severity'")):
        result = helm(*template_args("prd", {**ENABLED, **values},
                                     namespace=_namespace("prd")), check=False)
        assert result.returncode != 0 and complaint in result.stderr, result.stderr


def test_the_schema_knows_every_alert_by_name() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    disabled = schema["properties"]["metrics"]["properties"]["prometheusRule"]["properties"][
        "disabled"]
    assert disabled["propertyNames"]["enum"] == list(ALERTS)


def test_runbook_links_name_the_release() -> None:
    """Alert links are pinned to this chart's release tag, not to a moving branch, and the
    release's runbook has a section for each."""
    for alert in alert_rules(rules_of("test")):
        url = alert["annotations"]["runbook_url"]
        assert url.startswith(f"https://github.com/wingman-dev/wingman/blob/v{CHART_VERSION}/")
        assert "/blob/main/" not in url


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_alert_expressions_read_exported_series_of_this_release_only(env: str) -> None:
    environment = env_values(env)["environment"]
    for rule in alert_rules(rules_of(env)):
        for sel in check_contract(rule["expr"]):
            where = f"{sel.metric} in {rule['alert']}"
            if "environment" in SERIES[sel.metric].labels:
                assert sel.matchers.get("environment") == ("=", environment), where
            else:
                assert sel.matchers.get("job") == ("=", SCRAPE_JOB), where
                assert sel.matchers.get("namespace") == ("=", _namespace(env)), where


def test_scrape_job_comes_from_values() -> None:
    spec = rules_of("test", {"metrics.prometheusRule.scrapeJob": "kubernetes-pods"})
    down = next(r for r in alert_rules(spec) if r["alert"] == "WingmanOperatorDown")
    assert {s.matchers["job"] for s in selectors(down["expr"])} == {("=", "kubernetes-pods")}


@pytest.mark.parametrize(("values", "complaint"), [
    ({"metrics.prometheusRule.grantFailureRatio": 1.5}, "grantFailureRatio"),
    ({"metrics.prometheusRule.approvalBacklogSeconds": "1h"}, "approvalBacklogSeconds"),
    ({"metrics.prometheusRule.runbookUrl": "https://x/runbook.md#top"}, "runbookUrl"),
    ({"metrics.prometheusRule.extraRules": [{"alert": "X"}]}, "extraRules"),
    ({"metrics.prometheusRule.thresholds": {}}, "thresholds"),
    ({"metrics.serviceMonitor.interval": "often"}, "interval"),
    ({"metrics.dashboard.labels": {"grafana_dashboard": 1}}, "grafana_dashboard"),
    # Prometheus expands {{ }} in alert labels and annotations: one brace too many and it
    # refuses the whole rule group
    ({"metrics.prometheusRule.alertLabels": {"team": "{{ ops"}},
     "/metrics/prometheusRule/alertLabels/team"),
    ({"metrics.prometheusRule.runbookUrl": "https://wiki.example/{{runbook"},
     "/metrics/prometheusRule/runbookUrl"),
    # extra rules have the fields of a Prometheus rule, no other
    ({"metrics.prometheusRule.extraRules": [{"alert": "X", "expr": "up", "severity": "info"}]},
     "additional properties 'severity' not allowed"),
    ({"metrics.prometheusRule.extraRules": [{"record": "wingman denials", "expr": "up"}]},
     "/metrics/prometheusRule/extraRules/0/record"),
    ({"metrics.prometheusRule.extraRules": [{"alert": "X", "expr": "up", "for": "an hour"}]},
     "/metrics/prometheusRule/extraRules/0/for"),
])
def test_values_schema_rejects_bad_monitoring_values(values: dict[str, Any],
                                                     complaint: str) -> None:
    result = helm("template", "wingman", str(CHART_DIR), *set_args({**ENABLED, **values}),
                  check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr


# --------------------------------------------------------------------------- ServiceMonitor


def test_service_monitor_scrapes_the_metrics_service() -> None:
    objs = render("prd", {"metrics.serviceMonitor.enabled": True,
                          "metrics.serviceMonitor.labels": {"release": "kube-prometheus-stack"}},
                  namespace="wingman-prd")
    (monitor,) = find(objs, "ServiceMonitor")
    (service,) = find(objs, "Service", "wingman-operator-metrics")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["wingman-prd"]}
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # The job label Prometheus Operator gives the series is the Service name: the alerts'.
    assert service["metadata"]["name"] == SCRAPE_JOB


def test_service_monitor_without_the_service_fails_with_instructions() -> None:
    result = helm("template", "wingman", str(CHART_DIR), *set_args(
        {"metrics.serviceMonitor.enabled": True, "metrics.service.enabled": False}),
        check=False)
    assert result.returncode != 0
    assert "set metrics.service.enabled=true" in result.stderr


# --------------------------------------------------------------------------- dashboard


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD_FILE.read_text())
    assert isinstance(data, dict)
    return data


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dash["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return [p for p in out if p["type"] != "row"]


def test_dashboard_configmap_ships_the_dashboard_file() -> None:
    objs = render("test", {"metrics.dashboard.enabled": True,
                           "metrics.dashboard.namespace": "monitoring",
                           "metrics.dashboard.annotations": {"grafana_folder": "Wingman"}})
    (cm,) = [o for o in find(objs, "ConfigMap")
             if o["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Wingman"}
    shipped = json.loads(cm["data"]["wingman.json"])
    # the file as it is, but for what makes this release's copy its own
    own = ("uid", "title", "templating")
    assert {k: v for k, v in shipped.items() if k not in own} == \
        {k: v for k, v in dashboard().items() if k not in own}
    assert [v["name"] for v in shipped["templating"]["list"]] == \
        [v["name"] for v in dashboard()["templating"]["list"]]


def _dashboard_of(env: str, namespace: str, release: str = "wingman") -> tuple[str, dict[str, Any]]:
    objs = render(env, {"metrics.dashboard.enabled": True,
                        "metrics.dashboard.namespace": "monitoring"},
                  namespace=namespace, release=release)
    (cm,) = find(objs, "ConfigMap", namespace="monitoring")
    return str(cm["metadata"]["name"]), json.loads(cm["data"]["wingman.json"])


def test_dashboards_of_two_releases_do_not_collide() -> None:
    """Grafana keeps one dashboard per uid (and per title in a folder): each release's copy has
    its own, valid as a Grafana uid, and opens on its own environment and namespace."""
    seen = [_dashboard_of(env, _namespace(env)) for env in ENVIRONMENTS]
    seen.append(_dashboard_of("test", "team-b-" + "x" * 40 + "-wingman-test", "other"))
    seen.append(_dashboard_of("test", "team-b-" + "x" * 40 + "-wingman-test-2", "other"))
    assert len({name for name, _ in seen}) == len(seen)
    assert len({d["uid"] for _, d in seen}) == len(seen)
    assert len({d["title"] for _, d in seen}) == len(seen)
    for _, d in seen:
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", d["uid"]), d["uid"]
    _, prd = seen[1]
    current = {v["name"]: v.get("current", {}).get("value") for v in prd["templating"]["list"]}
    assert current["environment"] == ["prd"] and current["namespace"] == [_namespace("prd")]


def test_dashboard_queries_read_exported_series_scoped_by_the_variables() -> None:
    dash = dashboard()
    used: set[str] = set()
    for panel in panels(dash):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            for sel in check_contract(target["expr"]):
                used.add(sel.metric)
                where = f"{sel.metric} in panel {panel['title']!r}"
                if "environment" in SERIES[sel.metric].labels:
                    assert sel.matchers.get("environment") == ("=~", "$environment"), where
                else:
                    assert sel.matchers.get("namespace") == ("=~", "$namespace"), where
                    assert sel.matchers.get("job") == ("=~", "$job"), where
    assert {"wingman_approval_requests", "wingman_votes_total",
            "wingman_consensus_duration_seconds_bucket", "wingman_pending_approvals",
            "wingman_oldest_pending_approval_age_seconds", "wingman_grants_total",
            "wingman_tokens_minted_total", "wingman_denials_total",
            "wingman_reconcile_errors_total", "wingman_audit_errors_total"} <= used


def test_dashboard_variables_read_exported_series() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("environment", "namespace", "job"):
        m = re.fullmatch(r"label_values\((\w+), (\w+)\)", variables[name]["query"]["query"])
        assert m, name
        metric, label = m.groups()
        assert metric in SERIES
        assert label in SERIES[metric].labels | TARGET_LABELS


def test_dashboard_has_the_panels_operators_look_for() -> None:
    by_title = {p["title"]: p for p in panels(dashboard())}
    for title in ("Requests by phase", "Votes by verdict", "Consensus latency",
                  "Pending approvals and oldest age", "Grants by outcome", "Tokens minted",
                  "Denials by stage and reason", "Reconcile errors", "Audit errors"):
        assert title in by_title
    latency = " ".join(t["expr"] for t in by_title["Consensus latency"]["targets"])
    assert "histogram_quantile(0.5," in latency and "histogram_quantile(0.95," in latency
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))


# --------------------------------------------------------------------------- helm lint


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_helm_lint_passes_with_monitoring_enabled(env: str) -> None:
    values = {
        "metrics.prometheusRule.enabled": True,
        "metrics.prometheusRule.labels": {"release": "kube-prometheus-stack"},
        "metrics.prometheusRule.extraRules": [
            {"alert": "WingmanNoVotes", "expr": "sum(rate(wingman_votes_total[1h])) == 0"}],
        "metrics.serviceMonitor.enabled": True,
        "metrics.dashboard.enabled": True,
    }
    result = helm("lint", str(CHART_DIR), "--strict", "--namespace", _namespace(env),
                  "-f", str(values_file(env)), *set_args(values), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout
