"""`python -m tfdense COMMAND [ARGS]`: every command of `tfdense.cli`."""

import sys

from tfdense.cli import main

sys.exit(main())
