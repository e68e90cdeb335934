import sys

from samllava.cli import main

sys.exit(main())
