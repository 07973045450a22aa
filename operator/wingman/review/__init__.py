"""Review: how a request is judged before anyone decides.

Owns the panel arithmetic (``consensus``), the built-in deterministic voters (``voters``),
kubectl's and docker's command-line grammar as the voters read it (``commands``), the
prompt-injection detector (``injection``), the LLM voters (``llm``), building a panel from the
policy's voter specs (``panel``) and the environment policy with its decision rules
(``policy``: auto-approval, counting human decisions, TTLs, the allowlist patterns).

May import: ``wingman.errors``, ``wingman.scope`` and, in ``llm`` only, the providers' SDKs.
Never kopf or kubernetes: every function here is a function of data.
"""
