import sys

from scratchrnn.cli import main

sys.exit(main())
