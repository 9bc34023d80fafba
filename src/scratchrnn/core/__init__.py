"""The recurrent stack and its cells: one file per cell (:mod:`~scratchrnn.core.cells`: Elman, GRU),
the stack over any cell (:mod:`~scratchrnn.core.functional`, with the plan and layout of
:mod:`~scratchrnn.core.stack`), the custom operators and their autograd
(:mod:`~scratchrnn.core.ops`; ONNX: :mod:`~scratchrnn.core.onnx`), the modules RNN / GRU / RNNCell /
GRUCell / Recurrent (:mod:`~scratchrnn.core.modules`), the tutorial's loop corrected
(:mod:`~scratchrnn.core.reference`), initialisation schemes (:mod:`~scratchrnn.core.init`),
hand-written optimizers (:mod:`~scratchrnn.core.optim`) and the optional accelerator
(:mod:`~scratchrnn.core.accel`).

Nothing here knows of the language model or the applications.
"""

# On import: our module classes join torch.load's weights_only allow-list (serialization.py), and
# torch.onnx.export translates our operator with no extra argument (onnx.py).
from scratchrnn.core import serialization  # noqa: F401
from scratchrnn.core.onnx import register_with_exporter

register_with_exporter()
