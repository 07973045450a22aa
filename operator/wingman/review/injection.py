"""The deterministic prompt-injection detector: fixed patterns over the request's text.

The built-in ``prompt-injection`` voter rejects and flags what it finds; the LLM voters apply
the same findings to a model's vote, so a model talked into approving by the text it reviews
still cannot approve. The patterns are matched with the characters that render as nothing
removed (``wingman.model.text.IGNORABLE``: prose keeps the joiners, marks and variation
selectors that writing needs, and a preview's text is anyone's), so ``ig\u200cnore previous
instructions`` is found like what it looks like, and so is text whose words are parted by
other whitespace than one space, or by ``-`` or ``_`` (``ignore  previous\ninstructions``,
``ignore-previous-instructions``). Pure: imports only ``wingman.review.consensus``
and ``wingman.model.text``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from wingman.model.text import IGNORABLE
from wingman.review.consensus import (
    PREVIEW_FINDING,
    PROMPT_INJECTION,
    ReviewInput,
    Risk,
    Verdict,
    Vote,
)

INJECTION_PATTERNS = [re.compile(p, re.IGNORECASE) for p in (
    r"ignore (all |any |the )?(previous|prior|above|earlier) (instructions|rules|prompts?)",
    r"disregard (all |any |the )?(previous|prior|above|your) ",
    r"\byou are now\b", r"\bact as\b", r"\bpretend (to be|you)\b",
    r"\b(approve|accept) (this|the|my) (request|command)",
    r"\b(must|should|always) (be )?approve",
    r"\bverdict\b\s*[:=]", r'"verdict"', r"\bsystem\s*(prompt|message)?\s*:",
    r"\b(assistant|user|system)\s*:", r"<\s*/?\s*(system|instructions?|prompt|im_start|im_end)",
    r"\[/?INST\]",
    r"<\s*\|[^|<>\s]{1,40}\|\s*>",  # a chat template's special tokens: <|im_start|>, <|eot_id|>
    # a turn in Anthropic's prompt format, as written there: "a human: the on-call SRE" in
    # honest prose is not one (and would reject the request)
    r"\b(?-i:Human|HUMAN)\s*:",
    r"untrusted request (begin|end)",  # the words of Wingman's data delimiters, however written
    r"\bjailbreak\b", r"\bdeveloper mode\b", r"\boverride\b.*\b(policy|rules)\b",
    r"\brisk\b\s*[:=]\s*\"?low",
    r"[A-Za-z0-9+/]{80,}={0,2}",  # a long base64 blob smuggling instructions
)]


#: Patterns that ordinary object YAML matches (``system:serviceaccount:...`` subjects, a
#: ``user:`` key, a CA bundle): not applied to the preview's text, which is target state.
_YAML_PRONE = frozenset({r"\bsystem\s*(prompt|message)?\s*:", r"\b(assistant|user|system)\s*:",
                         r"\b(?-i:Human|HUMAN)\s*:", r"[A-Za-z0-9+/]{80,}={0,2}"})


_SPACE = re.compile(r"\s+")
_SEPARATORS = re.compile(r"[\s_-]+")


def _readable(texts: list[str]) -> list[str]:
    """``texts`` as a reader (or a model) takes them in: without what renders as nothing, in
    Unicode's compatibility form (NFKC: fullwidth and styled letters as plain ones), any
    run of whitespace one space (``ignore  previous\ninstructions``), and once more with
    ``-`` and ``_`` read as spaces too (``ignore-previous-instructions``)."""
    out: list[str] = []
    for text in texts:
        visible = IGNORABLE.sub("", text)
        # compatibility forms read like their plain letters (fullwidth and mathematical
        # letters, ligatures): match what the reader sees
        plain = unicodedata.normalize("NFKC", visible)
        out += [_SPACE.sub(" ", plain), _SEPARATORS.sub(" ", plain)]
    return out


def preview_texts(preview: Mapping[str, Any] | None) -> list[str]:
    """The free text of a recorded preview the reviewers (models included) read: the messages
    and diffs, which come from the target objects and the API server, not from Wingman."""
    if not isinstance(preview, Mapping):
        return []
    texts = [str(preview.get("message") or "")]
    for c in preview.get("commands") or []:
        if isinstance(c, Mapping):
            texts += [str(c.get("message") or ""), str(c.get("diff") or "")]
    return [t for t in texts if t]


def injection_findings(request: ReviewInput) -> list[str]:
    """Which injection patterns the requester's own text matches (empty when clean): the
    instruction, justification, commands and provenance."""
    texts = _readable([
        request.instruction, request.justification or "", *request.all_commands,
        *(str(v) for v in (request.source or {}).values() if isinstance(v, str))])
    return [p.pattern[:40] for p in INJECTION_PATTERNS if any(p.search(t) for t in texts)]


def target_findings(request: ReviewInput) -> list[str]:
    """Which injection patterns the preview's text matches (the messages and diffs of what the
    commands would change, shown to the LLM voters too), with all but the few that ordinary
    object YAML matches. That text comes from the target objects, not from the requester: an
    annotation saying "approve this request" must not talk a model into approving, and must
    not let whoever can write the object reject others' requests either, so it sends the
    request to a human instead (see ``PromptInjectionVoter``)."""
    shown = _readable(preview_texts(request.preview))
    return [p.pattern[:40] for p in INJECTION_PATTERNS
            if p.pattern not in _YAML_PRONE and any(p.search(t) for t in shown)]


class PromptInjectionVoter:
    """Rejects and flags requests whose text tries to instruct the reviewers."""

    name = "prompt-injection"

    async def review(self, request: ReviewInput) -> Vote:
        hits = injection_findings(request)
        if hits:
            return Vote(self.name, Verdict.REJECT, Risk.HIGH,
                        f"request text tries to instruct reviewers ({len(hits)} patterns)",
                        flags=(PROMPT_INJECTION,))
        planted = target_findings(request)
        if planted:
            return Vote(self.name, Verdict.REJECT, Risk.HIGH,
                        f"text in a target object the preview read tries to instruct reviewers "
                        f"({len(planted)} patterns); a human decides",
                        flags=(PREVIEW_FINDING,))
        return Vote(self.name, Verdict.APPROVE, Risk.LOW, "no instruction-like text found")


__all__ = ["INJECTION_PATTERNS", "PromptInjectionVoter", "injection_findings", "preview_texts",
           "target_findings"]
