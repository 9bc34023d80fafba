"""Whole-model ``torch.save(model)`` / ``torch.load(f)`` with torch's default ``weights_only=True``.

A program that saves the whole model and loads it back with the safe unpickler (pytorch/examples'
word_language_model does so) allow-lists the classes it expects, ``torch.nn.RNN`` among them
(``torch.serialization.safe_globals([...])``). Swapping in ``scratchrnn.RNN`` must not need a
second edit there: on import, our module classes join torch's allow-list
(``torch.serialization.add_safe_globals``), as torch's own nn modules are reachable by it.

Why that is safe: the unpickler rebuilds an allow-listed class by ``cls.__new__`` and then sets
its ``__dict__`` (or calls ``__setstate__``) with what the file holds; it never calls our
``__init__`` or any other method. What our modules hold is tensors (parameters), their names, and
plain settings (ints, floats, bools, strings, lists and dicts of them), each of which the
unpickler checks on its own against its allow-list; nothing in our classes runs code taken from
the file, refers to other globals, or reduces to a callable. Allowing them lets no file reach
anything that the allow-list did not already reach. See docs/dropin.md.
"""

from __future__ import annotations

import torch

from scratchrnn.core import modules

__all__ = ["SAFE_GLOBALS"]

# Every public module class of ours (RNN, RNNCell, and any cell module added beside them).
SAFE_GLOBALS = [c for c in map(modules.__dict__.get, modules.__all__)
                if isinstance(c, type) and issubclass(c, torch.nn.Module)]

torch.serialization.add_safe_globals(SAFE_GLOBALS)
