"""The chart's chat component: opt-in, its own identity, impersonation of exactly the mapped
people, and a configuration the chat process accepts as rendered."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from support.chart import CHART_DIR, find, helm, render, set_args
from wingman.errors import ConfigError
from wingman.settings import ChatSettings, SlackConfig, TelegramConfig, WebhookConfig

PEOPLE = [{"kubernetesUser": "bob", "groups": ["wingman:prd-approvers"],
           "telegramUserId": "123456789012", "slackUserId": "U0BOB", "totpSecretKey": "totp-bob"},
          {"kubernetesUser": "carol", "groups": ["wingman:prd-approvers", "oncall"],
           "slackUserId": "U0CAROL", "totpSecretKey": "totp-carol"}]
ON = {"chat.enabled": True, "chat.people": PEOPLE, "chat.allowedGroups": ["oncall"],
      "chat.telegram": {"enabled": True, "chatId": "-1001234567890123"},
      "chat.slack": {"enabled": True, "teamId": "T0TEAM", "channel": "C0APPROVE"},
      "chat.webhook": {"enabled": True, "url": "https://hooks.example.com/wingman"}}


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container["env"]}


@pytest.mark.parametrize("env", [None, "test", "prd"])
def test_chat_is_off_unless_enabled(env: str | None) -> None:
    objs = render(env)
    assert not [o for o in objs if "chat" in o["metadata"]["name"]]


def test_enabled_chat_runs_as_its_own_identity_with_its_configuration(tmp_path: Path) -> None:
    objs = render("prd", ON, namespace="wingman-prd")
    (dep,) = find(objs, "Deployment", "wingman-chat")
    spec = dep["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "wingman-chat" and dep["spec"]["replicas"] == 1
    # one process at a time, even during an upgrade: replay and step-up memory are its own
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    (container,) = spec["containers"]
    assert container["args"] == ["wingman", "chat"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["secrets"]["secret"]["secretName"] == "wingman-chat"
    # the rendered configuration is what the process accepts (ids survive as exact integers)
    (cm,) = find(objs, "ConfigMap", "wingman-chat")
    (tmp_path / "chat.yaml").write_text(cm["data"]["chat.yaml"])
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for key in ("telegram-token", "slack-bot-token", "slack-signing-secret", "webhook-secret"):
        (secrets / key).write_text("s3cr3t-value-0123456789\n")
    for key in ("totp-bob", "totp-carol"):  # base32, 160 bits (pyotp.random_base32())
        (secrets / key).write_text("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP\n")
    # the audit DSN: a file on a volume of its Secret, never an environment variable
    assert not any("secretKeyRef" in str(e) for e in container["env"])
    assert _env(container)["WINGMAN_AUDIT_TARGET_FILE"] == "/etc/wingman/audit-dsn/dsn"
    assert volumes["audit-dsn"]["secret"]["items"] == [{"key": "dsn", "path": "dsn"}]
    dsn = tmp_path / "dsn"
    dsn.write_text("postgresql://chat:s3cr3t@db/audit\n")
    env = _env(container) | {"WINGMAN_NAMESPACE": "wingman-prd",
                             "WINGMAN_CHAT_CONFIG": str(tmp_path / "chat.yaml"),
                             "WINGMAN_CHAT_SECRETS_DIR": str(secrets),
                             "WINGMAN_AUDIT_TARGET_FILE": str(dsn)}
    settings = ChatSettings.from_env(env)
    assert settings.audit_target == "postgresql://chat:s3cr3t@db/audit"
    assert "s3cr3t@" not in repr(settings)
    config = settings.config
    assert config.environment == "prd" and config.step_up  # on in prd values
    assert config.telegram is not None and config.telegram.chat_id == -1001234567890123
    assert config.person_for_telegram(123456789012) == config.person_named("bob")
    assert config.person_for_slack("U0CAROL") is not None
    assert settings.secret("totp-carol") == "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    assert settings.http_idle_seconds == 75.0  # above ingress-nginx's and ALB's 60 s
    with pytest.raises(ConfigError, match="WINGMAN_CHAT_HTTP_IDLE_SECONDS"):
        ChatSettings.from_env(env | {"WINGMAN_CHAT_HTTP_IDLE_SECONDS": "1"})
    # a TOTP secret step-up cannot use is refused at start, naming its key, never its value:
    # else every code of that person failed unanswered, each counted as a wrong one
    for bad in ("JBSWY3DPEHPK3PXP",  # 80 bits: fewer than the 112 pyotp takes
                "JBSW Y3DP EHPK 3PXP JBSW Y3DP EHPK 3PXP",  # as an app shows it, in groups
                "otpauth://totp/bob?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
                "0123456789abcdef0123456789abcdef"):  # hex, not base32
        (secrets / "totp-carol").write_text(bad + "\n")
        with pytest.raises(ConfigError, match=r"'totp-carol'.*carol.*base32") as caught:
            ChatSettings.from_env(env)
        assert bad not in caught.value.message and "JBSW" not in caught.value.message
    (secrets / "totp-carol").write_text("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP\n")
    (secrets / "webhook-secret").unlink()
    with pytest.raises(ConfigError, match="webhook-secret"):
        ChatSettings.from_env(env)


def test_the_chat_identity_may_impersonate_exactly_the_mapped_people() -> None:
    objs = render("prd", ON, namespace="wingman-prd")
    (role,) = find(objs, "ClusterRole", "wingman-wingman-prd-chat-impersonate")
    rules = {tuple(r["resources"]): r for r in role["rules"]}
    assert rules[("users",)]["resourceNames"] == ["bob", "carol"]
    assert rules[("groups",)]["resourceNames"] == ["wingman:prd-approvers", "oncall"]
    assert all(r["verbs"] == ["impersonate"] for r in role["rules"])
    (binding,) = find(objs, "ClusterRoleBinding", "wingman-wingman-prd-chat-impersonate")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "wingman-chat",
                                    "namespace": "wingman-prd"}]
    (own,) = find(objs, "Role", "wingman-chat")
    verbs = {v for r in own["rules"] for v in r["verbs"]}
    assert verbs == {"get", "list", "watch", "patch"}
    (cm_rule,) = [r for r in own["rules"] if r["resources"] == ["configmaps"]]
    assert cm_rule["resourceNames"] == ["wingman-chat-state"]
    # no people, no impersonation at all (a rule without resourceNames would allow anyone)
    nobody = render("prd", {**ON, "chat.people": []}, namespace="wingman-prd")
    assert not find(nobody, "ClusterRole", "wingman-wingman-prd-chat-impersonate")


@pytest.mark.parametrize(("values", "complaint"), [
    ({"chat.people": [{"kubernetesUser": "system:admin", "slackUserId": "U1"}]},
     "kubernetesUser"),
    ({"chat.people": [{"kubernetesUser": "bob", "groups": ["system:masters"],
                       "slackUserId": "U1"}]}, "groups"),
    ({"chat.people": [{"kubernetesUser": "bob"}]}, "people"),
    ({"chat.allowedGroups": ["system:masters"]}, "/chat/allowedGroups/0"),
    ({"chat.telegram": {"enabled": True, "chatId": -100123}}, "chatId"),
    ({"chat.slack": {"enabled": True, "teamId": "t1", "channel": "C1"}}, "teamId"),
    ({"chat.webhook": {"enabled": True, "url": "https://hooks.example/w extra"}},
     "/chat/webhook/url"),
    ({"chat.slack.baseUrl": "https://slack.internal /api/"}, "/chat/slack/baseUrl"),
])
def test_values_schema_rejects_dangerous_or_malformed_chat_values(
        values: dict[str, Any], complaint: str) -> None:
    result = helm("template", "wingman", str(CHART_DIR), *set_args({**ON, **values}),
                  check=False)
    assert result.returncode != 0
    assert complaint in result.stderr


@pytest.mark.parametrize("group", ["cluster-admins", "oncall"])
def test_a_person_mapped_to_a_group_the_chart_does_not_know_fails_with_instructions(
        group: str) -> None:
    """The chat component impersonates the groups it maps: a group bound to cluster-admin
    would hand cluster-admin to the chat pod. Only the release's approver and worker groups,
    and those chat.allowedGroups names, may be mapped."""
    people = [PEOPLE[0], {"kubernetesUser": "eve", "groups": ["wingman:prd-approvers", group],
                          "slackUserId": "U0EVE"}]
    result = helm("template", "wingman", str(CHART_DIR), "-f",
                  str(CHART_DIR.parents[1] / "manifests" / "prd" / "values.yaml"),
                  *set_args({**ON, "chat.allowedGroups": [], "chat.people": people}),
                  check=False)
    assert result.returncode != 0, "a person mapped to an unknown group was rendered"
    assert (f'chat.people[1] (eve) is mapped to group "{group}", which is neither in '
            "rbac.approvers.groups nor in rbac.workers.groups") in result.stderr, result.stderr
    assert "add it to chat.allowedGroups" in result.stderr
    # named by the platform team: rendered, and impersonable
    objs = render("prd", {**ON, "chat.allowedGroups": [group], "chat.people": people},
                  namespace="wingman-prd")
    (role,) = find(objs, "ClusterRole", "wingman-wingman-prd-chat-impersonate")
    (groups,) = [r for r in role["rules"] if r["resources"] == ["groups"]]
    assert groups["resourceNames"] == ["wingman:prd-approvers", group]


def test_people_mapped_to_the_release_s_own_groups_need_no_allowed_groups() -> None:
    people = [{"kubernetesUser": "bob", "groups": ["wingman:prd-approvers"],
               "slackUserId": "U0BOB"},
              {"kubernetesUser": "agent", "groups": ["wingman:prd-workers"],
               "slackUserId": "U0AGENT"}]
    objs = render("prd", {**ON, "chat.allowedGroups": [], "chat.people": people},
                  namespace="wingman-prd")
    assert find(objs, "ClusterRole", "wingman-wingman-prd-chat-impersonate")


@pytest.mark.parametrize(("people", "complaint"), [
    ([{"kubernetesUser": "bob", "slackUserId": "U1"},
      {"kubernetesUser": "eve", "slackUserId": "U1"}],
     'chat.people[0] and chat.people[1] have the same slackUserId "U1"'),
    ([{"kubernetesUser": "bob", "telegramUserId": "7"},
      {"kubernetesUser": "eve", "slackUserId": "U2"},
      {"kubernetesUser": "mallory", "telegramUserId": "7"}],
     'chat.people[0] and chat.people[2] have the same telegramUserId "7"'),
    ([{"kubernetesUser": "bob", "telegramUserId": "7"},
      {"kubernetesUser": "bob", "slackUserId": "U2"}],
     'chat.people[0] and chat.people[1] have the same kubernetesUser "bob"'),
])
def test_a_chat_account_or_user_mapped_twice_fails_with_instructions(
        people: list[dict[str, str]], complaint: str) -> None:
    """The chat component acts for the first entry that matches: a second entry for the same
    account would be ignored, or decide as somebody else."""
    result = helm("template", "wingman", str(CHART_DIR),
                  *set_args({**ON, "chat.people": people}), check=False)
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr


@pytest.mark.parametrize(("key", "url"), [
    ("chat.telegram.baseUrl",
     "https://api.telegram.org/bot123456789:AAH4c2VjcmV0LXRva2VuLWZvci10ZXN0aW5nAA/"),
    ("chat.slack.baseUrl", "https://slack.com/api/xoxb-1234-5678-secret/"),
    ("chat.webhook.url", "https://hooks.example/wingman?key=xoxp-1234-5678"),
    ("chat.webhook.url", "https://user:pa55word@hooks.example/w"),
    ("chat.telegram.baseUrl", "https://bot:secret@tg.internal/bot"),
    ("chat.webhook.url", "https://user:pa/secret@hooks.example/w"),
    ("chat.slack.baseUrl", "https://user:pa?secret#x@slack.internal/api/"),
])
def test_a_chat_credential_in_a_url_fails_unrepeated_instead_of_reaching_the_config_map(
        key: str, url: str) -> None:
    result = helm("template", "wingman", str(CHART_DIR), *set_args({**ON, key: url}),
                  check=False)
    assert result.returncode != 0
    assert (f"{key} holds what looks like a Telegram or Slack token" in result.stderr
            or f"{key} has credentials (user:password@)" in result.stderr), result.stderr
    assert url not in result.stderr and "secret" not in result.stderr.replace(
        "chat.secretName", "").replace("webhook-secret", "")


def test_enabled_chat_without_a_channel_says_what_to_do() -> None:
    result = helm("template", "wingman", str(CHART_DIR), *set_args({"chat.enabled": True}),
                  check=False)
    assert result.returncode != 0
    assert "enable chat.telegram, chat.slack or chat.webhook" in result.stderr


def test_each_channel_setting_is_a_chart_value_and_each_chart_value_is_used() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    chat = schema["properties"]["chat"]["properties"]
    for key, config in (("telegram", TelegramConfig), ("slack", SlackConfig),
                        ("webhook", WebhookConfig)):
        read = {re.sub(r"_([a-z])", lambda m: m.group(1).upper(), f.name)
                for f in fields(config)}
        assert read == set(chat[key]["properties"]) - {"enabled"}, key


def test_only_the_chat_component_writes_the_data_of_its_state() -> None:
    """Its state holds the step-up lockouts: an admission policy (with chat only) lets only
    the chat ServiceAccount write its data, in the release namespace."""
    ns = "wingman-prd"
    assert not find(render("prd", namespace=ns), "ValidatingAdmissionPolicy",
                    f"wingman-{ns}-chat-state")
    objs = render("prd", ON, namespace=ns)
    (vap,) = find(objs, "ValidatingAdmissionPolicy", f"wingman-{ns}-chat-state")
    (binding,) = find(objs, "ValidatingAdmissionPolicyBinding", f"wingman-{ns}-chat-state")
    assert vap["spec"]["failurePolicy"] == "Fail"
    (condition,) = vap["spec"]["matchConditions"]
    assert '"wingman-chat-state"' in condition["expression"]
    (rule,) = vap["spec"]["validations"]
    assert f'"system:serviceaccount:{ns}:wingman-chat"' in rule["expression"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert binding["spec"]["matchResources"]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": ns}}
