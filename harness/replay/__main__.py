"""``python -m harness.replay``."""

import sys

from harness.replay.cli import main

sys.exit(main())
