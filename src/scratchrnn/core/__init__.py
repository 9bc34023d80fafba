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
