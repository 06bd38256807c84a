"""`python -m tfdense.train`: the documented training command, kept at its name; it is `tfdense.cli.train`."""

import sys

from tfdense.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
