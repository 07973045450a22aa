"""Wingman: AI agents ask, reviewers and humans decide, one gateway executes once.

The package is organised one module per concept; each module's docstring says what it owns.
"""

__version__ = "0.1.0"

GROUP = "wingman.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

__all__ = ["API_VERSION", "GROUP", "VERSION", "__version__"]
