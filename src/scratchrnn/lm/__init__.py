"""The character-level language model on the core RNN: the model and its hand-written head and
loss (:mod:`~scratchrnn.lm.model`), text and batches (:mod:`~scratchrnn.lm.data`), the settings
(:mod:`~scratchrnn.lm.config`), the learning-rate schedule (:mod:`~scratchrnn.lm.schedule`),
evaluation (:mod:`~scratchrnn.lm.evaluation`), the checkpoint format
(:mod:`~scratchrnn.lm.checkpoint`), the run directory and its lock (:mod:`~scratchrnn.lm.rundir`),
atomic writes and bounded reads (:mod:`~scratchrnn.lm.files`), the training loop
(:mod:`~scratchrnn.lm.train`) and data-parallel plumbing (:mod:`~scratchrnn.lm.distributed`).

It uses the core; it knows nothing of the applications.
"""
