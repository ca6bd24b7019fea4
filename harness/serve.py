"""``python -m harness.serve``: start, list and stop model services (harness/service/cli.py;
``--help``, docs/services.md)."""

from __future__ import annotations

import sys

from harness.service.cli import main

if __name__ == "__main__":
    sys.exit(main())
