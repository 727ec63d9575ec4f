import sys

from psyfactory.cli import main

sys.exit(main())
