"""``python -m cocoseg_monai.cli``: the ``cocoseg`` command."""

import sys

from . import main

sys.exit(main())
