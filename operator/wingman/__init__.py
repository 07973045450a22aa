"""Wingman: AI agents ask, reviewers and humans decide, one gateway executes once.

The package is organised by component and concept; each subpackage's docstring says what it
owns and what it may import (``tests/unit/test_architecture.py`` checks it):

- shared, at the top: ``errors``, ``conditions``, ``logs``, ``settings``, ``kube``, ``scope``;
- ``model``: the wingman.dev objects as the operator and the gateway both read them;
- ``review``: consensus, voters, LLM reviewers, policy;
- ``capability``: tokens and keys;
- ``audit``: records and chain, file and PostgreSQL sinks, verification;
- ``operator``: the kopf handlers, the pure approval and grant logic, the manifests;
- ``gateway``: the execution gateway, executors, redaction;
- ``verifier``: ``wingman verify-privileges``;
- ``cli``: the command line;
- ``dev``: the local control plane and node harness (development only, not shipped).
"""

__version__ = "0.1.0"

GROUP = "wingman.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

__all__ = ["API_VERSION", "GROUP", "VERSION", "__version__"]
