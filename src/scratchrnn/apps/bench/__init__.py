"""The benchmarks: :mod:`~scratchrnn.apps.bench.rnn` (``scratchrnn bench``: scratchrnn.RNN against
its peers) and :mod:`~scratchrnn.apps.bench.lm` (the language model against its nn.RNN twin)."""
