"""`python -m tests.chaos` (what `make chaos` runs)."""

import sys

from tests.chaos.runner import main

sys.exit(main())
