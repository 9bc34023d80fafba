"""Which GRU is ours: the one place the applications look for ``scratchrnn.GRU``.

The drop-in for torch.nn.GRU (issue 17) is built on another branch. Until it is merged, the
benchmark times nn.GRU and the peers only and the lab's gradient-flow experiment runs nn.GRU,
each saying so with :data:`NO_GRU`; after the merge both pick ours up from here, unedited.
"""

from __future__ import annotations

from torch import nn

from scratchrnn.core import modules

NO_GRU = "scratchrnn.GRU is not in this build (issue 17): nn.GRU only"


def gru_class() -> type[nn.Module] | None:
    """scratchrnn.GRU (a drop-in for torch.nn.GRU: same arguments, state_dict and outputs), or None.

    Looked up in the core's modules, where scratchrnn.GRU lives beside scratchrnn.RNN (the apps
    import the rooms below them, not the package root); a cell of the same name is not a module.
    """
    gru = getattr(modules, "GRU", None)
    return gru if isinstance(gru, type) and issubclass(gru, nn.Module) else None
