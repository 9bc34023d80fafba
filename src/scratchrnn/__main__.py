import sys

from scratchrnn.apps.cli import main

sys.exit(main())
