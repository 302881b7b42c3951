import sys

from ftwiz.cli.main import main

sys.exit(main())
