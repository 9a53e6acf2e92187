import sys

from femo.cli import main

sys.exit(main())
