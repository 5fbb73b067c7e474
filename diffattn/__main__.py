"""`python -m diffattn` runs the `diffattn` command."""

import sys

from .cli import main

sys.exit(main())
