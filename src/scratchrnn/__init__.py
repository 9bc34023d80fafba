"""scratchrnn: the Elman RNN written from scratch on PyTorch, with a hand-written BPTT."""

from scratchrnn.rnn import RNN, RNNCell

__all__ = ["RNN", "RNNCell"]
__version__ = "0.1.0"
