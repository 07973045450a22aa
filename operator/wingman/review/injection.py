"""The deterministic prompt-injection detector: fixed patterns over the request's text.

The built-in ``prompt-injection`` voter rejects and flags what it finds; the LLM voters apply
the same findings to a model's vote, so a model talked into approving by the text it reviews
still cannot approve. Pure: imports only ``wingman.review.consensus``.
"""

from __future__ import annotations

import re

from wingman.review.consensus import PROMPT_INJECTION, ReviewInput, Risk, Verdict, Vote

INJECTION_PATTERNS = [re.compile(p, re.IGNORECASE) for p in (
    r"ignore (all |any |the )?(previous|prior|above|earlier) (instructions|rules|prompts?)",
    r"disregard (all |any |the )?(previous|prior|above|your) ",
    r"\byou are now\b", r"\bact as\b", r"\bpretend (to be|you)\b",
    r"\b(approve|accept) (this|the|my) (request|command)",
    r"\b(must|should|always) (be )?approve",
    r"\bverdict\b\s*[:=]", r'"verdict"', r"\bsystem\s*(prompt|message)?\s*:",
    r"\b(assistant|user|system)\s*:", r"<\s*/?\s*(system|instructions?|prompt|im_start|im_end)",
    r"\[/?INST\]", r"\bjailbreak\b", r"\bdeveloper mode\b", r"\boverride\b.*\b(policy|rules)\b",
    r"\brisk\b\s*[:=]\s*\"?low",
    r"[A-Za-z0-9+/]{80,}={0,2}",  # a long base64 blob smuggling instructions
)]


def injection_findings(request: ReviewInput) -> list[str]:
    """Which injection patterns the request's text matches (empty when clean)."""
    texts = [request.instruction, request.justification or "", *request.all_commands,
             *(str(v) for v in (request.source or {}).values() if isinstance(v, str))]
    hits = []
    for pattern in INJECTION_PATTERNS:
        if any(pattern.search(t) for t in texts):
            hits.append(pattern.pattern[:40])
    return hits


class PromptInjectionVoter:
    """Rejects and flags requests whose text tries to instruct the reviewers."""

    name = "prompt-injection"

    async def review(self, request: ReviewInput) -> Vote:
        hits = injection_findings(request)
        if hits:
            return Vote(self.name, Verdict.REJECT, Risk.HIGH,
                        f"request text tries to instruct reviewers ({len(hits)} patterns)",
                        flags=(PROMPT_INJECTION,))
        return Vote(self.name, Verdict.APPROVE, Risk.LOW, "no instruction-like text found")


__all__ = ["INJECTION_PATTERNS", "PromptInjectionVoter", "injection_findings"]
