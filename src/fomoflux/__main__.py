"""``python -m fomoflux``: the ``fomoflux`` command (fomoflux.cli)."""

import sys

from fomoflux.cli import main

sys.exit(main())
