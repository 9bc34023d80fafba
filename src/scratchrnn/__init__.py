"""scratchrnn: the Elman RNN written from scratch on PyTorch, with a hand-written BPTT."""

from scratchrnn.core.modules import RNN, RNNCell, convert
from scratchrnn.lm.data import Vocab
from scratchrnn.lm.model import CharRNN, generate
from scratchrnn.lm.train import TrainConfig

__all__ = ["RNN", "CharRNN", "RNNCell", "TrainConfig", "Vocab", "convert", "generate"]
__version__ = "0.1.0"
