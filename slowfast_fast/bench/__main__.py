"""Entry point of ``python -m slowfast_fast.bench``."""

import sys

from slowfast_fast.bench.cli import main

sys.exit(main())
