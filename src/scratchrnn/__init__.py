"""scratchrnn: recurrent networks written from scratch on PyTorch, with a hand-written BPTT.

The public names, in one place: the drop-ins for torch.nn's RNN, GRU, RNNCell and GRUCell, the stack
of a cell of one's own (:class:`Recurrent` over a :class:`Cell`), :func:`convert` and
:func:`init_rnn_`; the character-level language model (:class:`CharRNN`, :class:`Vocab`,
:func:`generate`) and its training (:class:`TrainConfig`, :func:`train`).
"""

from scratchrnn.core.cells import Activation, Cell
from scratchrnn.core.init import init_rnn_
from scratchrnn.core.modules import GRU, RNN, GRUCell, Recurrent, RNNCell, convert
from scratchrnn.lm.config import TrainConfig
from scratchrnn.lm.data import Vocab
from scratchrnn.lm.model import CharRNN, generate
from scratchrnn.lm.train import train

__all__ = [
    "GRU", "RNN", "Activation", "Cell", "CharRNN", "GRUCell", "RNNCell", "Recurrent", "TrainConfig", "Vocab",
    "convert", "generate", "init_rnn_", "train",
]
__version__ = "0.1.0"
