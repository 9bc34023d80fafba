"""scratchrnn: the Elman RNN written from scratch on PyTorch, with a hand-written BPTT."""

from scratchrnn.charlm import CharRNN, generate
from scratchrnn.data import Vocab
from scratchrnn.rnn import RNN, RNNCell
from scratchrnn.train import TrainConfig

__all__ = ["RNN", "CharRNN", "RNNCell", "TrainConfig", "Vocab", "generate"]
__version__ = "0.1.0"
