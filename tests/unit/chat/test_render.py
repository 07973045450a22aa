"""What a chat message shows: request text can fake no formatting, mention, link or button,
commands are exact (invisible characters made visible, never cut), and a timeout is never
called a rejection."""

from __future__ import annotations

import datetime as dt
import json
import unicodedata
from typing import Any

from wingman.chat import render

NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


def request(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "req-1", "uid": "0f8fad5b-d9cb-469f-a165-70867728950e",
                     "creationTimestamp": "2030-01-01T11:00:00Z"},
        "spec": {"requester": "<@U123> @channel", "environment": "prd",
                 "instruction": "*bold* <https://evil.example|click> </b><b>",
                 "commands": ["kubectl rollout restart deployment/web -n apps"],
                 "source": {"agent": "<a href='x'>"}},
        "status": {"phase": "AwaitingDecision", "expirationTime": "2030-01-01T13:00:00Z",
                   "consensus": {"risk": "high", "outcome": "NoConsensus", "votes": [
                       {"voter": "destructive", "verdict": "Reject", "risk": "high",
                        "rationale": "<i>deletes</i> @here"}],
                       "dissent": [{"voter": "destructive", "verdict": "Reject",
                                    "risk": "high", "rationale": "x"}]},
                   "decision": {"approvedBy": [], "requiredApprovals": 2}, **status},
    }


def test_telegram_card_shows_everything_and_escapes_untrusted_text_inside_code() -> None:
    v = render.view(request(), [], NOW)
    text = render.telegram_card(v)
    assert "<code>&lt;@U123&gt; @channel</code>" in text
    assert "<code>*bold* &lt;https://evil.example|click&gt; &lt;/b&gt;&lt;b&gt;</code>" in text
    assert "<pre>kubectl rollout restart deployment/web -n apps</pre>" in text
    assert "<code>&lt;i&gt;deletes&lt;/i&gt; @here</code>" in text
    assert "0 of 2 approvals" in text and "2030-01-01T13:00:00Z" in text
    assert "Dissent" in text and "&lt;a href=&#x27;x&#x27;&gt;" in text
    assert v.live


def test_slack_card_puts_untrusted_text_only_in_plain_text_and_rich_text() -> None:
    v = render.view(request(), [], NOW)
    blocks = render.slack_card(v, [("wingman_approve", "Approve", "sig")])

    def texts(node: Any) -> list[dict[str, Any]]:
        found = []
        if isinstance(node, dict):
            if node.get("type") in ("mrkdwn",):
                found.append(node)
            for value in node.values():
                found += texts(value)
        elif isinstance(node, list):
            for value in node:
                found += texts(value)
        return found

    assert texts(blocks) == []  # no mrkdwn anywhere
    (pre,) = [b for b in blocks if b["type"] == "rich_text"
              and b["elements"][0]["type"] == "rich_text_preformatted"]
    assert pre["elements"][0]["elements"][0]["text"] == v.commands[0]
    assert "<" not in render.slack_fallback(v).replace("&lt;", "")
    assert [b for b in blocks if b["type"] == "actions"]


def test_invisible_characters_are_shown_and_commands_are_never_cut() -> None:
    shown, changed = render.visible("kubectl delete pod x\u202e -n\u200b apps")
    assert changed and shown == "kubectl delete pod x\\u{202E} -n\\u{200B} apps"
    # the Hangul fillers are letters that show as blank: a name of them looks empty
    shown, changed = render.visible("\u3164\uffa0bob\u115f")
    assert changed and shown == "\\u{3164}\\u{FFA0}bob\\u{115F}"
    prose = "Vérifié 👍 \u2764\ufe0f, שלום"
    assert render.visible(prose) == (prose, False)
    many = render.shown_commands(["kubectl get pods " + "a" * 1000] * 5, budget=2500)
    assert many.hidden == 3 and all(len(line) == 1017 for line in many.lines)


def test_a_command_cannot_spell_out_wingman_s_escape_of_a_look_alike() -> None:
    """A command that writes ``\\u{0435}`` itself (which runs, as plain ASCII) is not shown
    as a command holding a Cyrillic e, U+0435 (which the gateway refuses): its backslash is shown as
    \\u{005C} and the command flagged; other backslashes are shown as they are."""
    spelled = render.visible("printf 'w\\u{0435}b\\n'", ascii_only=True)
    real = render.visible("printf 'w\u0435b\\n'", ascii_only=True)
    assert real == ("printf 'w\\u{0435}b\\n'", True)
    assert spelled == ("printf 'w\\u{005C}u{0435}b\\n'", True)
    assert render.visible("grep -E 'a\\.b\\u00e9'", ascii_only=True) == (
        "grep -E 'a\\.b\\u00e9'", False)  # no brace: not Wingman's notation
    card = render.telegram_card(render.view(request(), [], NOW))
    assert "\\u{005C}" not in card  # an ordinary command shows no such mark


def _stacked(text: str) -> int:
    """The most combining marks (accents) drawn on one character of ``text``."""
    most = run = 0
    for ch in text:
        run = run + 1 if unicodedata.category(ch) in ("Mn", "Me") else 0
        most = max(most, run)
    return most


def test_stacked_accents_cannot_draw_over_wingman_s_own_lines() -> None:
    """Dozens of combining marks on one character ("Zalgo" text) are drawn over the lines
    above and below, Wingman's labels and status included; one at the start of a field sits
    on Wingman's own character before it. Beyond three on a character, and at a field's
    start, they are shown as \\u{XXXX}; accents as languages use them are shown as they are."""
    zalgo = "\u0336" + "Z" + "\u030d\u0311\u0352" * 20 + "\nok\n\u20dd"
    obj = request()
    obj["spec"]["instruction"] = zalgo
    obj["status"]["consensus"]["votes"][0]["rationale"] = zalgo
    v = render.view(obj, [], NOW)
    blocks = render.slack_card(v, [("wingman_approve", "Approve", "sig")])
    slack = json.dumps(blocks, ensure_ascii=False).replace("\\\\", "\\")  # JSON doubles \\
    for text in (render.telegram_card(v), slack):
        assert _stacked(text) <= 3
        assert "\\u{0336}Z" in text  # not on the label before it
        assert "ok\n\\u{20DD}" in text or "ok\\n\\u{20DD}" in text  # nor on a line's start
    prose = "Tiếng Việt: re\u0301sume\u0301 \u0915\u094d\u0937 \u2764\ufe0f"
    assert render.visible(prose) == (prose, False)


def test_a_run_of_stacked_accents_is_shown_as_code_points_from_the_fourth_on() -> None:
    """Beyond three accents on a character, the rest of the run is shown as code points:
    none of it is stacked on the escapes' own ``}`` instead (Zalgo text drawn in smaller
    heaps, and escapes that read as accented)."""
    shown, changed = render.visible("Z" + "\u0301" * 10 + " ok")
    assert changed and shown == "Z" + "\u0301" * 3 + "\\u{0301}" * 7 + " ok"
    assert render.visible("\u0301\u0302x\u0303")[0] == "\\u{0301}\\u{0302}x\u0303"
    assert render.visible("ok \u200b\u0301")[0] == "ok \\u{200B}\u0301"  # one, on the }


def test_buttons_die_when_decided_or_expired_and_a_timeout_is_not_a_rejection() -> None:
    approved = render.view(request(phase="Approved", conditions=[
        {"type": "Approved", "status": "True", "reason": "ApprovedByHumans"}],
        decision={"approvedBy": ["bob", "carol"], "requiredApprovals": 2}), [], NOW)
    assert not approved.live and approved.state_reason == "approved by bob, carol"
    late = render.view(request(), [], NOW + dt.timedelta(hours=2))
    assert not late.live and late.state == "Expired"
    assert "not a rejection" in late.state_reason
    (notice,) = render.notices(late, NOW + dt.timedelta(hours=2), 15)
    assert notice.audience == "requester" and "not a rejection" in notice.text
    assert "reject" not in notice.text.lower().replace("not a rejection", "")


def test_expiry_warning_goes_to_approvers_shortly_before_expiry() -> None:
    v = render.view(request(), [], NOW)
    assert render.notices(v, NOW, 15) == []
    soon = NOW + dt.timedelta(minutes=50)
    (warn,) = render.notices(render.view(request(), [], soon), soon, 15)
    assert warn.audience == "approvers" and "expires in 10 minute(s)" in warn.text


def test_grant_results_are_reported_with_exit_code() -> None:
    grant = {"metadata": {"name": "req-1-abc"},
             "spec": {"approvalRef": {"name": "req-1"}, "command": "kubectl get pods"},
             "status": {"phase": "Failed", "exitCode": 3, "reason": "CommandFailed"}}
    v = render.view(request(phase="Approved", conditions=[
        {"type": "Approved", "status": "True", "reason": "ApprovedByHumans"}]), [grant], NOW)
    keys = {n.key: n.text for n in render.notices(v, NOW, 15)}
    assert "Failed with exit code 3 (CommandFailed)" in keys["grant:req-1-abc:Failed"]


def test_a_grant_notice_flags_a_command_shown_with_code_points() -> None:
    """A grant's notice shows its command as the card does (a look-alike, a Cyrillic e, as
    ``\\u{0435}``) and says so as the card does: not as a command of other characters."""
    grant = {"metadata": {"name": "req-1-abc"},
             "spec": {"approvalRef": {"name": "req-1"}, "command": "kubectl get pods w\u0435b"},
             "status": {"phase": "Succeeded", "exitCode": 0}}
    plain = {"metadata": {"name": "req-1-def"},
             "spec": {"approvalRef": {"name": "req-1"}, "command": "kubectl get pods web"},
             "status": {"phase": "Succeeded", "exitCode": 0}}
    v = render.view(request(phase="Approved", conditions=[
        {"type": "Approved", "status": "True", "reason": "ApprovedByHumans"}]),
        [grant, plain], NOW)
    keys = {n.key: n.text for n in render.notices(v, NOW, 15)}
    flagged = keys["grant:req-1-abc:Succeeded"]
    assert "kubectl get pods w\\u{0435}b" in flagged and "non-ASCII" in flagged
    assert "non-ASCII" not in keys["grant:req-1-def:Succeeded"]


PREVIEW = {"phase": "Completed",
           "summary": {"objects": 1, "kinds": ["Deployment"], "namespaces": ["apps"],
                       "findings": 1},
           "commands": [
               {"command": "kubectl scale deployment/web --replicas=3 -n apps",
                "outcome": "Previewed", "message": "dry run",
                "targets": [{"group": "apps", "version": "v1", "resource": "deployments",
                             "kind": "Deployment", "namespace": "apps", "name": "web",
                             "generation": 4, "action": "Update"}]},
               {"command": "kubectl scale deployment/ghost --replicas=3 -n apps",
                "outcome": "TargetMissing",
                "message": 'deployments.apps "<b>ghost</b>" not found'}]}


def test_the_preview_is_shown_what_would_change_and_what_was_found() -> None:
    v = render.view(request(preview=PREVIEW), [], NOW)
    assert v.preview[0] == "1 object(s) would change (Deployment) in apps; 1 finding(s)"
    text = render.telegram_card(v)
    assert "<b>Preview</b> (server-side dry run)" in text
    assert "<code>1. Previewed: Update Deployment apps/web (generation 4)</code>" in text
    # what the cluster answered is literal text too
    assert "&quot;&lt;b&gt;ghost&lt;/b&gt;&quot; not found" in text
    slack = render.slack_card(v)
    (shown,) = [b["elements"][0]["elements"] for b in slack if b["type"] == "rich_text"
                and b["elements"][0]["elements"][0]["text"] == "Preview"]
    assert [e["text"] for e in shown if e.get("style") == {"code": True}][2].startswith(
        "2. TargetMissing")  # the cluster's answer: code
    failed = render.view(request(preview={"phase": "Failed", "message": "timed out"}), [], NOW)
    assert failed.preview == ("Failed: timed out",)
