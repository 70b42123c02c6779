"""``python -m elign.cli`` (and ``torchrun -m elign.cli``): the ``elign`` command."""

import sys

from elign.cli import main

sys.exit(main())
