"""The cells, one file each, and the registry by name: a new cell is its file plus one line here.

See :mod:`scratchrnn.core.cells.base` for what a cell is, and docs/cells.md for writing one.
"""

from scratchrnn.core.cells.activations import BUILT_IN, Activation
from scratchrnn.core.cells.base import CELLS, Cell, get, register
from scratchrnn.core.cells.elman import Elman
from scratchrnn.core.cells.gru import GRU

__all__ = ["CELLS", "GRU", "Activation", "Cell", "Elman", "get", "register"]

for _name in BUILT_IN:  # rnn_tanh, rnn_relu, rnn_gelu, rnn_silu, ...
    register(Elman(_name))
register(GRU())
