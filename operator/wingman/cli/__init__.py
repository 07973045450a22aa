"""The ``wingman`` / ``kubectl wingman`` command line.

``main`` parses arguments and dispatches to the component that owns a command; ``requests``
holds the request, decision, grant and describe commands (over ``wingman.client``); ``audit``
the ``wingman audit verify`` arguments and command. This is the one package that may
start any component (operator, gateway, verifier) and the only runtime importer of
``wingman.dev`` (for ``wingman dev ...``, which needs a source checkout).
"""
