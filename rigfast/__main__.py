import sys

from rigfast.cli import main

sys.exit(main())
