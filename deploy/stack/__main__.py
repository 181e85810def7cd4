"""``python -m deploy.stack up|down|status ...``: see deploy/stack/cli.py."""

import sys

from deploy.stack.cli import main

sys.exit(main())
