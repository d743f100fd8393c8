"""``python -m cocoseg_monai``: the same as the ``cocoseg`` command."""

import sys

from .cli import main

sys.exit(main())
