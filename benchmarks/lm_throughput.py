"""Entry point of the language-model benchmark (:mod:`scratchrnn.apps.bench.lm`); run from the
repository root: ``python benchmarks/lm_throughput.py --quality 180`` writes benchmarks/LM_RESULTS.md."""

import sys

from scratchrnn.apps.bench.lm import main

sys.exit(main())
