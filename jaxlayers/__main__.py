"""``python -m jaxlayers``: the ``jaxlayers`` command."""

import sys

from jaxlayers.cli import main

sys.exit(main())
