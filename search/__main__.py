"""``python -m rawdemosaic.search ...``: see :mod:`rawdemosaic.search.cli`."""

import sys

from .cli import main

sys.exit(main())
