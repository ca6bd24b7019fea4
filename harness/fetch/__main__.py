import sys

from harness.fetch.cli import main

sys.exit(main())
