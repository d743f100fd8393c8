"""``python -m cocoseg_monai.data.phantom``: runs the command line of :mod:`.cli`."""

import sys

from cocoseg_monai.data.phantom.cli import main

if __name__ == "__main__":
    sys.exit(main())
