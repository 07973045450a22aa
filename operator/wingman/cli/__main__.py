"""``python -m wingman.cli``: the same as the ``wingman`` command."""

import sys

from wingman.cli.main import main

sys.exit(main())
