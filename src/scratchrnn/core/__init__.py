"""The RNN and what it needs: the math as pure functions (:mod:`~scratchrnn.core.functional`),
the custom operators and their autograd (:mod:`~scratchrnn.core.ops`; ONNX:
:mod:`~scratchrnn.core.onnx`), the modules RNN / RNNCell (:mod:`~scratchrnn.core.modules`),
the tutorial's loop corrected (:mod:`~scratchrnn.core.reference`), initialisation schemes
(:mod:`~scratchrnn.core.init`), hand-written optimizers (:mod:`~scratchrnn.core.optim`) and the
optional accelerator (:mod:`~scratchrnn.core.accel`).

Nothing here knows of the language model or the applications.
"""
