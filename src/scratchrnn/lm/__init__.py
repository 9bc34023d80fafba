"""The character-level language model on the core RNN: the model and its hand-written head and
loss (:mod:`~scratchrnn.lm.model`), text and batches (:mod:`~scratchrnn.lm.data`), the settings
(:mod:`~scratchrnn.lm.config`) and the learning-rate schedule (:mod:`~scratchrnn.lm.schedule`),
the training loop (:mod:`~scratchrnn.lm.train`), evaluation (:mod:`~scratchrnn.lm.evaluation`),
checkpoints (:mod:`~scratchrnn.lm.checkpoint`), the run directory (:mod:`~scratchrnn.lm.rundir`,
with :mod:`~scratchrnn.lm.files` for atomic writes and bounded reads) and data-parallel plumbing
(:mod:`~scratchrnn.lm.distributed`).

It uses the core; it knows nothing of the applications.
"""
