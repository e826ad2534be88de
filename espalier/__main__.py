"""``python -m espalier``: the same command line as the ``espalier`` script."""

import sys

from espalier.cli import main

sys.exit(main())
