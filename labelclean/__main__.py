"""``python -m labelclean ...`` = the ``labelclean`` command (the training worker runs its
``train`` this way, with the same interpreter)."""

import sys

from labelclean.cli import main

sys.exit(main())
