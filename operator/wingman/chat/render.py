"""What a chat message shows, for each channel, from the objects alone. Pure.

``view(request, grants, now)`` reads an ApprovalRequest and its ExecutionGrants into a
``RequestView``; ``telegram_card``, ``slack_card`` and ``webhook_body`` render it
(``telegram_summary``: the short card of a request too long for one Telegram message);
``notices`` says which one-off messages are due (the expiry warning for approvers, every
terminal state for the requester's channel, with its reason).

**Request text is untrusted.** Everything a requester, a voter or an approver wrote (the
instruction, justification, commands, rationales, reasons, the requester's name, the source)
and what the cluster answered (the preview, a grant's reason) is shown as literal text and
nothing else, always as code, apart from Wingman's own bold labels and plain words, which it
therefore cannot fake; request and grant names are code too (``x.example.com`` is a name):

- Telegram: HTML parse mode, every untrusted string escaped and placed inside ``<code>`` or
  ``<pre>`` (Telegram detects no mention, hashtag, command or link inside code entities), link
  previews off. Buttons are the message's reply markup, which text cannot add to.
- Slack: rich-text blocks (``slack_rich``), whose ``text`` elements Slack never parses for
  formatting, mentions or links: labels bold, untrusted text code, commands preformatted; the
  header and the notification fallback ``text`` carry no untrusted text at all.
- Webhook: JSON values.

Free text is cut to a few hundred characters and ``MAX_LINES`` lines (``clip``), so that no
field pushes the commands, the votes or the state out of view; in a notice it stays on one
line (``Notice.parts``: a newline shown as ``\\n``).

Commands are shown byte for byte, as code. Characters that would not be visible (controls,
bidirectional overrides, zero-width and other format characters, line separators) are shown as
``\\u{XXXX}`` and the command is marked, so what is approved is what is seen. A command is
never cut: when the commands do not fit into one message, the ones that do not fit are named
by count and the reader is sent to ``kubectl wingman describe``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from wingman.model.approvals import parse_time
from wingman.model.preview import summary_lines
from wingman.model.text import UNSHOWN

#: Phases in which a request can still be decided from chat.
DECIDABLE = ("AwaitingDecision",)
FINAL_APPROVAL = ("Rejected", "Expired")
FINAL_GRANT = ("Denied", "Succeeded", "Failed", "Expired")

TEXT_LIMIT = 600  # per free-text field in a message
RATIONALE_LIMIT = 300
COMMANDS_BUDGET = 2400  # characters of commands in one message
MAX_VOTES_SHOWN = 12
#: Lines of the preview a chat message shows (the reach and one per command).
MAX_PREVIEW_LINES = 11
#: Lines of one free-text field (instruction, justification, rationale, reason) a card shows.
MAX_LINES = 8
#: Combining marks (accents) shown on one character; further ones are shown as \u{XXXX}.
MAX_MARKS = 3


@dataclass(frozen=True)
class Vote:
    voter: str
    verdict: str
    risk: str
    rationale: str
    error: str = ""


@dataclass(frozen=True)
class Decision:
    verdict: str
    by: str
    reason: str


@dataclass(frozen=True)
class GrantView:
    name: str
    command: str
    phase: str
    reason: str = ""
    exit_code: int | None = None
    requester: str = ""


@dataclass(frozen=True)
class RequestView:
    """Everything a message about one ApprovalRequest shows (and whether it can be decided)."""

    name: str
    uid: str
    environment: str
    requester: str
    instruction: str
    justification: str
    commands: tuple[str, ...]
    phase: str
    risk: str
    outcome: str
    votes: tuple[Vote, ...]
    dissent: tuple[Vote, ...]
    decisions: tuple[Decision, ...]
    approved_by: tuple[str, ...]
    required: int
    expires: str
    created: str
    state: str  # Open, Approved, AutoApproved, Rejected, Revoked, Expired, Reviewing
    state_reason: str
    source: tuple[tuple[str, str], ...] = ()
    grants: tuple[GrantView, ...] = field(default=())
    #: What the commands would change (``status.preview``), a few lines; untrusted text.
    preview: tuple[str, ...] = ()

    @property
    def live(self) -> bool:
        """Whether buttons work: only while a human decision is awaited and not expired."""
        return self.state == "Open"

    def fingerprint(self) -> str:
        """Changes whenever anything a card shows changes."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:32]


def _cond(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for c in status.get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == kind and c.get("status") == "True":
            return c
    return None


def _votes(items: Any) -> tuple[Vote, ...]:
    out = []
    for v in items or []:
        if isinstance(v, Mapping):
            out.append(Vote(str(v.get("voter", "")), str(v.get("verdict", "")),
                            str(v.get("risk", "")), str(v.get("rationale", "")),
                            str(v.get("error", "") or "")))
    return tuple(out)


def _source(value: Any) -> tuple[tuple[str, str], ...]:
    if isinstance(value, Mapping):
        return tuple((str(k), str(v) if not isinstance(v, Mapping | list) else json.dumps(v))
                     for k, v in sorted(value.items()))
    if value:
        return (("source", str(value)),)
    return ()


def _state(spec: Mapping[str, Any], status: Mapping[str, Any], now: dt.datetime
           ) -> tuple[str, str]:
    """(state, reason in words) of a request, from its conditions and the clock."""
    decisions = [d for d in spec.get("decisions") or [] if isinstance(d, Mapping)]
    rejecter = next((d for d in decisions if d.get("verdict") == "Reject"), None)
    if _cond(status, "Revoked"):
        who = f" by {rejecter.get('by')}" if rejecter else ""
        why = f": {rejecter.get('reason')}" if rejecter and rejecter.get("reason") else ""
        return "Revoked", f"the approval was revoked{who}{why}"
    rejected = _cond(status, "Rejected")
    if rejected:
        if rejected.get("reason") == "RejectedByApprover" and rejecter:
            why = f": {rejecter.get('reason')}" if rejecter.get("reason") else ""
            return "Rejected", f"rejected by {rejecter.get('by')}{why}"
        return "Rejected", (f"rejected by policy ({rejected.get('reason')}): "
                            f"{rejected.get('message', '')}")
    expires = parse_time(status.get("expirationTime"))
    expired = _cond(status, "Expired") is not None or (expires is not None and now >= expires)
    approved = _cond(status, "Approved")
    if expired:
        at = status.get("expirationTime", "")
        if approved:
            return "Expired", (f"the approval expired at {at}: nothing more can run under it "
                               "(this is a timeout, not a rejection)")
        return "Expired", (f"expired at {at} without a decision: this is a timeout, not a "
                           "rejection; create a new request if it is still needed")
    if approved:
        if approved.get("reason") == "AutoApproved":
            return "AutoApproved", "approved automatically by the environment's policy"
        by = ", ".join(str(x) for x in (status.get("decision") or {}).get("approvedBy") or [])
        return "Approved", f"approved by {by}" if by else "approved"
    if status.get("phase") == "AwaitingDecision":
        return "Open", "awaiting a human decision"
    return "Reviewing", "being reviewed by the panel"


def view(request: Mapping[str, Any], grants: Sequence[Mapping[str, Any]],
         now: dt.datetime) -> RequestView:
    """The view of one request and the grants that name it."""
    meta = request.get("metadata") or {}
    spec = request.get("spec") or {}
    status = request.get("status") or {}
    consensus = status.get("consensus") or {}
    decision = status.get("decision") or {}
    state, reason = _state(spec, status, now)
    name = str(meta.get("name", ""))
    mine = []
    for g in grants:
        gspec, gstatus = g.get("spec") or {}, g.get("status") or {}
        if (gspec.get("approvalRef") or {}).get("name") != name:
            continue
        code = gstatus.get("exitCode")
        mine.append(GrantView(str((g.get("metadata") or {}).get("name", "")),
                              str(gspec.get("command", "")),
                              str(gstatus.get("phase") or "Pending"),
                              str(gstatus.get("reason") or ""),
                              code if isinstance(code, int) else None,
                              str(gspec.get("requester") or "")))
    mine.sort(key=lambda g: g.name)
    return RequestView(
        name=name, uid=str(meta.get("uid", "")),
        environment=str(spec.get("environment", "")),
        requester=str(spec.get("requester", "")),
        instruction=str(spec.get("instruction", "")),
        justification=str(spec.get("justification", "") or ""),
        commands=tuple(str(c) for c in spec.get("commands") or []),
        phase=str(status.get("phase") or "Pending"),
        risk=str(consensus.get("risk") or "-"),
        outcome=str(consensus.get("outcome") or "-"),
        votes=_votes(consensus.get("votes")),
        dissent=_votes(consensus.get("dissent")),
        decisions=tuple(Decision(str(d.get("verdict", "")), str(d.get("by", "")),
                                 str(d.get("reason", "") or ""))
                        for d in spec.get("decisions") or [] if isinstance(d, Mapping)),
        approved_by=tuple(str(x) for x in decision.get("approvedBy") or []),
        required=int(decision.get("requiredApprovals") or 1),
        expires=str(status.get("expirationTime") or ""),
        created=str(meta.get("creationTimestamp") or ""),
        state=state, state_reason=reason,
        source=_source(spec.get("source")),
        grants=tuple(mine),
        preview=tuple(summary_lines(status.get("preview") or {})[:MAX_PREVIEW_LINES]),
    )


# --------------------------------------------------------------------------- text safety


def visible(text: str, *, keep_newlines: bool = False, ascii_only: bool = False
            ) -> tuple[str, bool]:
    """``text`` with every invisible character shown as ``\\u{XXXX}``; (text, changed).
    ``ascii_only`` (commands, which the gateway runs only as plain ASCII): every other
    character too, so that a look-alike (a Cyrillic ``\\u0435`` for an ``e``) is seen, and a
    backslash the command itself writes before ``u{`` (``\\u{005C}``), so that a ``\\u{0435}``
    it spells out is not read as one of these.

    Combining marks (accents: categories Mn, Me) are shown as they are up to ``MAX_MARKS`` on
    one character; the further ones, and one with no character of the text before it to sit
    on, are shown as ``\\u{XXXX}``: stacked by the dozen ("Zalgo" text) they are drawn over
    the lines above and below, Wingman's own words included, and one at the start of a
    field (or of a line) would sit on the character before it, which is Wingman's."""
    out: list[str] = []
    changed = False
    marks = -1  # combining marks on the character last shown; -1: none to sit on
    for i, ch in enumerate(text):
        if keep_newlines and ch == "\n":
            out.append(ch)
            marks = -1
            continue
        cat = unicodedata.category(ch)
        # UNSHOWN: the Hangul fillers, U+034F, U+17B4: letters, shown blank
        if (ascii_only and (not ch.isascii() or (ch == "\\" and text.startswith("u{", i + 1)))) \
                or cat in ("Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn") \
                or (cat == "Zs" and ch != " ") or UNSHOWN.match(ch) \
                or (cat in ("Mn", "Me") and not 0 <= marks < MAX_MARKS):
            out.append(f"\\u{{{ord(ch):04X}}}")
            changed = True
            # the rest of a run of marks too (else they would stack on the escape's "}");
            # after an escaped character that is not a mark, the next one sits on that "}"
            marks = MAX_MARKS if cat in ("Mn", "Me") else 0
        else:
            out.append(ch)
            marks = marks + 1 if cat in ("Mn", "Me") else 0
    return "".join(out), changed


def clip(text: str, limit: int, *, lines: int = MAX_LINES, one_line: bool = False) -> str:
    """Free text (never a command) shortened to ``limit`` characters and ``lines`` lines,
    marked when cut (``… (N more lines)``), so that no text pushes what follows it (the
    commands, the votes, the state) out of view. ``one_line``: a newline is shown as ``\\n``,
    as in the logs, where the text sits inside a line Wingman wrote."""
    shown, _ = visible(text, keep_newlines=True)
    if one_line:
        shown = shown.replace("\n", "\\n")
    else:
        rows = shown.split("\n")
        if len(rows) > lines:
            more = f"… ({len(rows) - lines} more lines)"
            shown = "\n".join(rows[:lines]) + "\n" + more
            if len(shown) > limit:
                return shown[: max(0, limit - len(more) - 1)] + "\n" + more
    if len(shown) <= limit:
        return shown
    return shown[: limit - 1] + "…"


@dataclass(frozen=True)
class ShownCommands:
    lines: tuple[str, ...]  # each command, escaped only for invisible characters
    marked: tuple[bool, ...]
    hidden: int  # commands that did not fit


def shown_commands(commands: Sequence[str], budget: int = COMMANDS_BUDGET) -> ShownCommands:
    lines: list[str] = []
    marked: list[bool] = []
    used = 0
    for i, c in enumerate(commands):
        text, changed = visible(c, ascii_only=True)
        if used + len(text) > budget and lines:
            return ShownCommands(tuple(lines), tuple(marked), len(commands) - i)
        if used + len(text) > budget:  # a single command larger than the budget
            return ShownCommands((), (), len(commands))
        lines.append(text)
        marked.append(changed)
        used += len(text) + 1
    return ShownCommands(tuple(lines), tuple(marked), 0)


STATE_ICON = {"Open": "⏳", "Reviewing": "🔎", "Approved": "✅", "AutoApproved": "✅",
              "Rejected": "❌", "Revoked": "⛔", "Expired": "⌛"}
GRANT_ICON = {"Succeeded": "✅", "Failed": "❌", "Denied": "⛔", "Expired": "⌛"}


def _grant_line(g: GrantView) -> str:
    exit_code = f", exit code {g.exit_code}" if g.exit_code is not None else ""
    reason = f" ({g.reason})" if g.reason else ""
    return f"{g.phase}{exit_code}{reason}"


# --------------------------------------------------------------------------- Telegram


def _tg(text: str, limit: int = TEXT_LIMIT, *, one_line: bool = False) -> str:
    """Untrusted text as Telegram HTML: made visible, cut (``clip``), escaped, inside
    ``<code>``, where Telegram finds no mention, hashtag, command or link, and which Wingman's
    own bold labels and plain words stand apart from."""
    return f"<code>{html.escape(clip(text, limit, one_line=one_line))}</code>"


def telegram_card(v: RequestView) -> str:
    """The HTML text of a request's Telegram message (buttons are added by the channel)."""
    e = html.escape
    lines = [f"<b>{STATE_ICON.get(v.state, '')} Wingman approval request</b> "
             f"<code>{e(v.name)}</code>",
             f"<b>Environment:</b> <code>{e(v.environment)}</code>",
             f"<b>Requester:</b> {_tg(v.requester, 120)}",
             f"<b>Instruction:</b> {_tg(v.instruction)}"]
    if v.justification:
        lines.append(f"<b>Justification:</b> {_tg(v.justification)}")
    for key, value in v.source:
        lines.append(f"<b>Source</b> {_tg(key, 40)}: {_tg(value, 200)}")
    shown = shown_commands(v.commands)
    lines.append(f"<b>Commands</b> ({len(v.commands)}, exactly as they would run):")
    for text, marked in zip(shown.lines, shown.marked, strict=True):
        lines.append(f"<pre>{e(text)}</pre>")
        if marked:
            lines.append("⚠️ contains invisible or non-ASCII (look-alike) characters, shown as "
                         "\\u{…}: the gateway runs only plain ASCII commands (a \\u{005C} is a "
                         "backslash the command writes before u{)")
    if shown.hidden:
        lines.append(f"⚠️ {shown.hidden} more command(s) not shown: read them all with "
                     f"<code>kubectl wingman describe {e(v.name)}</code> before deciding")
    if v.preview:
        lines.append(f"<b>Preview</b> (server-side dry run): {_tg(v.preview[0], 300)}")
        lines += [f"• {_tg(line, 300)}" for line in v.preview[1:]]
    lines.append(f"<b>Panel:</b> {_tg(v.outcome, 40, one_line=True)}, risk "
                 f"{_tg(v.risk, 40, one_line=True)}")
    for vote in v.votes[:MAX_VOTES_SHOWN]:
        err = f" (abstained: {_tg(vote.error, 120)})" if vote.error else ""
        lines.append(f"• {_tg(vote.voter, 60, one_line=True)} "
                     f"{_tg(f'{vote.verdict}/{vote.risk}', 70, one_line=True)}: "
                     f"{_tg(vote.rationale, RATIONALE_LIMIT)}{err}")
    if len(v.votes) > MAX_VOTES_SHOWN:
        lines.append(f"• … {len(v.votes) - MAX_VOTES_SHOWN} more votes")
    if v.dissent:
        names = ", ".join(e(clip(d.voter, 60)) for d in v.dissent)
        lines.append(f"<b>Dissent:</b> <code>{names}</code>")
    lines.append(f"<b>Decisions:</b> {len(v.approved_by)} of {v.required} approvals")
    for d in v.decisions:
        reason = f": {_tg(d.reason, 200)}" if d.reason else ""
        lines.append(f"• {_tg(d.verdict, 20, one_line=True)} by "
                     f"{_tg(d.by, 120, one_line=True)}{reason}")
    lines.append(f"<b>Expires:</b> <code>{e(v.expires or '-')}</code>")
    lines.append(f"<b>Status:</b> {STATE_ICON.get(v.state, '')} {e(v.state)}: "
                 f"{_tg(v.state_reason, 400)}")
    for g in v.grants:
        lines.append(f"{GRANT_ICON.get(g.phase, '▶️')} grant <code>{e(g.name)}</code>: "
                     f"{_tg(_grant_line(g), 300, one_line=True)}")
    if v.live:
        lines.append("Decide with the buttons, or /approve or /reject "
                     f"<code>{e(v.name)}</code>.")
    return "\n".join(lines)


def telegram_summary(v: RequestView) -> str:
    """The short Telegram card of a request whose card does not fit into one message even
    abridged: who asks, how many commands, where to read them, the state; no request text
    beyond the requester's name. Always far below Telegram's limit."""
    e = html.escape
    icon = STATE_ICON.get(v.state, "")
    lines = [f"<b>{icon} Wingman approval request</b> <code>{e(v.name)}</code>",
             f"<b>Environment:</b> <code>{e(v.environment)}</code>",
             f"<b>Requester:</b> {_tg(v.requester, 120)}",
             f"<b>Commands:</b> {len(v.commands)}",
             "⚠️ This request is too long for a chat message: read it in full with "
             f"<code>kubectl wingman describe {e(v.name)}</code> before deciding",
             f"<b>Panel:</b> {_tg(v.outcome, 40)}, risk {_tg(v.risk, 40)}",
             f"<b>Decisions:</b> {len(v.approved_by)} of {v.required} approvals",
             f"<b>Expires:</b> <code>{e(v.expires or '-')}</code>",
             f"<b>Status:</b> {icon} {e(v.state)}: {_tg(v.state_reason, 400)}"]
    if v.grants:
        done = sum(1 for g in v.grants if g.phase in FINAL_GRANT)
        lines.append(f"<b>Grants:</b> {len(v.grants)} ({done} finished)")
    if v.live:
        lines.append("Decide with the buttons, or /approve or /reject "
                     f"<code>{e(v.name)}</code>.")
    return "\n".join(lines)


# --------------------------------------------------------------------------- Slack


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text[:2990] or " ", "emoji": False}


def slack_fallback(v: RequestView) -> str:
    """The notification text (mrkdwn): only names Kubernetes validated, escaped anyway, the
    request's name as code, where Slack makes no link of it (``x.example.com`` is a name)."""
    def esc(s: str) -> str:
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return esc(f"Wingman: approval request `{v.name}` ({v.environment}): {v.state}")


#: A part of a Slack rich-text line: Wingman's label (bold), Wingman's words, or untrusted
#: text (code: what a requester, a voter, an approver or the cluster wrote).
LABEL, OWN, THEIRS = "label", "own", "theirs"
#: Characters of one rich-text block (a section's text holds at most 3000).
RICH_LIMIT = 2990
_STYLE = {LABEL: {"bold": True}, THEIRS: {"code": True}}


def slack_rich(parts: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """A rich-text block of (text, LABEL | OWN | THEIRS) parts. Slack parses no text element
    (no mrkdwn, mention, channel alert or link), and untrusted text is always code: it cannot
    look like Wingman's own bold labels or plain words, whatever it holds. At most
    ``RICH_LIMIT`` characters, the last part cut with …"""
    elements: list[dict[str, Any]] = []
    left = RICH_LIMIT
    for text, kind in parts:
        if not text:
            continue
        if len(text) > left:  # as a section's text was: a block Slack surely takes
            text = text[:max(0, left - 1)] + "…"
        element: dict[str, Any] = {"type": "text", "text": text}
        if kind in _STYLE:
            element["style"] = dict(_STYLE[kind])
        elements.append(element)
        left -= len(text)
        if left <= 0:
            break
    if not elements:
        elements.append({"type": "text", "text": " "})
    return {"type": "rich_text",
            "elements": [{"type": "rich_text_section", "elements": elements}]}


def slack_card(v: RequestView, buttons: Sequence[tuple[str, str, str]] = ()
               ) -> list[dict[str, Any]]:
    """Block Kit blocks; ``buttons``: (action_id, label, value) while the request is live.
    Wingman's labels are bold, untrusted text is code (``slack_rich``), commands preformatted."""
    facts: list[tuple[str, str]] = [
        ("Request: ", LABEL), (v.name, THEIRS), ("\nEnvironment: ", LABEL),
        (v.environment, THEIRS),
        ("\nRequester: ", LABEL), (clip(v.requester, 120, one_line=True), THEIRS),
        ("\nRisk: ", LABEL), (clip(v.risk, 40, one_line=True), THEIRS),
        (" (panel: ", OWN), (clip(v.outcome, 40, one_line=True), THEIRS), (")", OWN),
        ("\nDecisions: ", LABEL),
        (f"{len(v.approved_by)} of {v.required} approvals", OWN),
        ("\nExpires: ", LABEL), (v.expires or "-", OWN)]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(f"{STATE_ICON.get(v.state, '')} Wingman approval "
                                          "request")},
        slack_rich(facts),
        slack_rich([("Instruction: ", LABEL), (clip(v.instruction, TEXT_LIMIT), THEIRS)]),
    ]
    if v.justification:
        blocks.append(slack_rich([("Justification: ", LABEL),
                                  (clip(v.justification, TEXT_LIMIT), THEIRS)]))
    if v.source:
        source: list[tuple[str, str]] = [("Source:", LABEL)]
        for k, val in v.source:
            source += [(" ", OWN), (clip(k, 40, one_line=True), THEIRS), ("=", OWN),
                       (clip(val, 200, one_line=True), THEIRS)]
        blocks.append(slack_rich(source))
    shown = shown_commands(v.commands)
    blocks.append(slack_rich([(f"Commands ({len(v.commands)}, exactly as they would run):",
                               LABEL)]))
    if shown.lines:
        blocks.append({"type": "rich_text", "elements": [
            {"type": "rich_text_preformatted",
             "elements": [{"type": "text", "text": "\n".join(shown.lines)}]}]})
    if any(shown.marked):
        blocks.append(slack_rich([("⚠ a command contains invisible or non-ASCII (look-alike) "
                                   "characters, shown as \\u{…}: the gateway runs only plain "
                                   "ASCII commands (a \\u{005C} is a backslash the command "
                                   "writes before u{)", OWN)]))
    if shown.hidden:
        blocks.append(slack_rich([
            (f"⚠ {shown.hidden} more command(s) not shown: read them all with ", OWN),
            (f"kubectl wingman describe {v.name}", THEIRS), (" before deciding", OWN)]))
    if v.preview:
        preview: list[tuple[str, str]] = [("Preview", LABEL), (" (server-side dry run):", OWN)]
        for line in v.preview:
            preview += [("\n", OWN), (clip(line, 300, one_line=True), THEIRS)]
        blocks.append(slack_rich(preview))
    if v.votes:
        votes: list[tuple[str, str]] = [("Votes:", LABEL)]
        for x in v.votes[:MAX_VOTES_SHOWN]:
            votes += [("\n• ", OWN), (clip(x.voter, 60, one_line=True), THEIRS), (" ", OWN),
                      (clip(f"{x.verdict}/{x.risk}", 70, one_line=True), THEIRS), (": ", OWN),
                      (clip(x.rationale, RATIONALE_LIMIT), THEIRS)]
            if x.error:
                votes += [(" (abstained: ", OWN), (clip(x.error, 120, one_line=True), THEIRS),
                          (")", OWN)]
        if len(v.votes) > MAX_VOTES_SHOWN:
            votes.append((f"\n• … {len(v.votes) - MAX_VOTES_SHOWN} more votes", OWN))
        blocks.append(slack_rich(votes))
    if v.dissent:
        dissent: list[tuple[str, str]] = [("Dissent:", LABEL)]
        for d in v.dissent:
            dissent += [(" ", OWN), (clip(d.voter, 60, one_line=True), THEIRS)]
        blocks.append(slack_rich(dissent))
    if v.decisions:
        decisions: list[tuple[str, str]] = [("Decisions:", LABEL)]
        for dec in v.decisions:
            decisions += [("\n• ", OWN), (clip(dec.verdict, 20, one_line=True), THEIRS),
                          (" by ", OWN), (clip(dec.by, 120, one_line=True), THEIRS)]
            if dec.reason:
                decisions += [(": ", OWN), (clip(dec.reason, 200), THEIRS)]
        blocks.append(slack_rich(decisions))
    status: list[tuple[str, str]] = [("Status: ", LABEL), (v.state, OWN), (": ", OWN),
                                     (clip(v.state_reason, 400), THEIRS)]
    for g in v.grants:
        status += [("\ngrant ", OWN), (g.name, THEIRS), (": ", OWN),
                   (clip(_grant_line(g), 300, one_line=True), THEIRS)]
    blocks.append(slack_rich(status))
    if v.live and buttons:
        elements = []
        for action_id, label, value in buttons:
            button: dict[str, Any] = {"type": "button", "action_id": action_id,
                                      "text": _plain(label), "value": value}
            button["style"] = "primary" if "approve" in action_id else "danger"
            elements.append(button)
        blocks.append({"type": "actions", "block_id": "wingman_decide", "elements": elements})
    return blocks


def slack_summary(v: RequestView, buttons: Sequence[tuple[str, str, str]] = ()
                  ) -> list[dict[str, Any]]:
    """The short Slack card of a request whose card Slack refused (``msg_too_long``,
    ``invalid_blocks``, ...): who asks, how many commands, where to read them, the state and
    the buttons; no request text beyond its names and the requester's, so that approvers are
    still notified and can decide after reading the request with ``kubectl wingman``."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(f"{STATE_ICON.get(v.state, '')} Wingman approval "
                                          "request")},
        slack_rich([
            ("Request: ", LABEL), (v.name, THEIRS), ("\nEnvironment: ", LABEL),
            (v.environment, THEIRS),
            ("\nRequester: ", LABEL), (clip(v.requester, 120, one_line=True), THEIRS),
            ("\nCommands: ", LABEL), (str(len(v.commands)), OWN),
            ("\nDecisions: ", LABEL),
            (f"{len(v.approved_by)} of {v.required} approvals", OWN),
            ("\nExpires: ", LABEL), (v.expires or "-", OWN)]),
        slack_rich([("⚠ Slack refused this request's full card: read it in full with ", OWN),
                    (f"kubectl wingman describe {v.name}", THEIRS), (" before deciding", OWN)]),
        slack_rich([("Status: ", LABEL), (v.state, OWN), (": ", OWN),
                    (clip(v.state_reason, 400, one_line=True), THEIRS)]),
    ]
    if v.live and buttons:
        blocks.append(slack_card(v, buttons)[-1])  # the same buttons
    return blocks


# --------------------------------------------------------------------------- webhook


def webhook_body(v: RequestView, event: str, text: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"event": event, "environment": v.environment,
                            "request": asdict(v), "live": v.live}
    body["request"]["source"] = dict(v.source)
    if text:
        body["text"] = text
    return body


# --------------------------------------------------------------------------- notices


@dataclass(frozen=True)
class Notice:
    """A one-off message: ``key`` is sent once per channel; ``audience`` approvers|requester.

    ``parts``: (text, untrusted) in order; what a requester, an approver or the cluster wrote
    is untrusted: made visible, on one line (a newline shown as ``\\n``), and shown by the
    channels as code, apart from Wingman's own words, which it cannot imitate."""

    key: str
    audience: str
    event: str
    parts: tuple[tuple[str, bool], ...]

    @property
    def text(self) -> str:
        """The whole notice as plain text (the webhook's ``text``)."""
        return "".join(t for t, _ in self.parts)


def _own(text: str) -> tuple[str, bool]:
    return (text, False)


def _theirs(text: str, limit: int) -> tuple[str, bool]:
    return (clip(text, limit, one_line=True), True)


def _name(name: str) -> tuple[str, bool]:
    """A Kubernetes name (``x.example.com`` is one): as code, so no channel makes it a link."""
    return (name, True)


def notices(v: RequestView, now: dt.datetime, warn_minutes: int) -> list[Notice]:
    out: list[Notice] = []
    expires = parse_time(v.expires)
    if (v.live and warn_minutes and expires is not None
            and now >= expires - dt.timedelta(minutes=warn_minutes)):
        left = max(0, int((expires - now).total_seconds() // 60))
        out.append(Notice(
            "warn", "approvers", "request.expiring", (
                _own("Approval request "), _name(v.name), _own(
                    f" ({v.environment}) expires in {left} minute(s), at {v.expires}, with "
                    f"{len(v.approved_by)} of {v.required} approvals. Decide now or it times "
                    "out."))))
    if v.state in ("Approved", "AutoApproved", "Rejected", "Revoked", "Expired"):
        run = (_own(" Run a command with: "),
               _name(f"kubectl wingman exec {v.name} --command '...'"))
        follow = {
            "Approved": run, "AutoApproved": run,
            "Rejected": (_own(" Nothing will run."),),
            "Revoked": (_own(" Nothing more will run under it."),),
            "Expired": (_own(" It timed out; nothing will run under it."),),
        }[v.state]
        out.append(Notice(
            f"final:{v.state}", "requester", f"request.{v.state.lower()}", (
                _own("Request "), _name(v.name), _own(f" ({v.environment}) by "),
                _theirs(v.requester, 120), _own(f": {v.state}, "),
                _theirs(v.state_reason, 600), _own("."), *follow)))
    for g in v.grants:
        if g.phase in FINAL_GRANT:
            code = f" with exit code {g.exit_code}" if g.exit_code is not None else ""
            cmd, flagged = visible(g.command, ascii_only=True)
            parts = [_own("Grant "), _name(g.name), _own(" of request "), _name(v.name),
                     _own(f": {g.phase}{code}")]
            if g.reason:
                parts += [_own(" ("), _theirs(g.reason, 200), _own(")")]
            parts += [_own(". Command: "), (cmd, True)]
            if flagged:  # as the card says it
                parts += [_own(" (⚠ invisible or non-ASCII characters shown as \\u{…}: the "
                               "gateway runs only plain ASCII commands; a \\u{005C} is a "
                               "backslash the command writes before u{)")]
            out.append(Notice(f"grant:{g.name}:{g.phase}", "requester",
                              f"grant.{g.phase.lower()}", tuple(parts)))
    return out


__all__ = [
    "DECIDABLE",
    "FINAL_GRANT",
    "Decision",
    "GrantView",
    "Notice",
    "RequestView",
    "ShownCommands",
    "Vote",
    "clip",
    "notices",
    "parse_time",
    "shown_commands",
    "slack_card",
    "slack_fallback",
    "slack_rich",
    "slack_summary",
    "telegram_card",
    "telegram_summary",
    "view",
    "visible",
    "webhook_body",
]
