"""`python -m tfnas.cli`: the `tfnas` command."""

import sys

from tfnas.cli import main

sys.exit(main())
