"""`python -m ftwiz.core.engine RUN_DIR`: the training process of one run."""

import sys

from ftwiz.core.engine.process import main

if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m ftwiz.core.engine RUN_DIR", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
