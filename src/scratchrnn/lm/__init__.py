"""The character-level language model on the core RNN: the model and its hand-written head and
loss (:mod:`~scratchrnn.lm.model`), text and batches (:mod:`~scratchrnn.lm.data`), the training
loop (:mod:`~scratchrnn.lm.train`) and data-parallel plumbing (:mod:`~scratchrnn.lm.distributed`).

It uses the core; it knows nothing of the applications.
"""
