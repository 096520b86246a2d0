"""``python -m framework`` runs the ``wirekit`` command."""

from __future__ import annotations

import sys

from framework.cli import main

sys.exit(main())
