"""``wingman verify-privileges``: proof on a live cluster that only the gateway's commands can
execute.

Owns the privilege model (``rights``, pure) and the command that checks a cluster against it
(``privileges``). May import: ``wingman.errors``, ``wingman.kube`` (its kubeconfig checks) and
the standard library and kubernetes.
"""
