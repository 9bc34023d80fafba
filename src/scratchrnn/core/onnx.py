"""ONNX export: ``torch.ops.scratchrnn.rnn`` translated into ONNX's own ``RNN`` or ``GRU`` operator,
one per layer.

    >>> torch.onnx.export(model, (x,), "model.onnx")

needs no extra argument, as with nn.RNN: while ``torch.onnx.export`` captures the model, the
operator wrapper hands our translation to the exporter (:func:`register_with_exporter`). Passing it
explicitly, ``custom_translation_table=onnx_translation_table()``, still works.

ONNX's RNN computes, per direction, H_t = f(X_t Wᵀ + H_{t-1} Rᵀ + Wb + Rb) with W (dirs, H, D),
R (dirs, H, H), B = [Wb | Rb] (dirs, 2H) and outputs Y (T, dirs, N, H), Y_h (dirs, N, H): our
W_ih, W_hh, b_ih, b_hh stacked over the directions. ONNX's GRU takes the same with 3H rows, its
gates in z, r, h order (ours, torch's, are r, z, n: the rows are reordered) and
``linear_before_reset=1``: the reset gate applied after the recurrent product, as ours. A stacked
RNN is one ONNX operator per layer, each reading the previous one's Y as (T, N, dirs·H). Padded
input in eval mode only: a PackedSequence or dropout masks have no ONNX counterpart here. The Elman
cells whose f ONNX's RNN has (:data:`ONNX_ACTIVATIONS`) export; so do the options that are off in
eval (recurrent dropout, weight drop); layer norm, zoneout, gelu, silu and a user's cell do not.
onnxscript is imported only when this is called (an optional dependency: ``pip install
scratchrnn[onnx]``).
"""

from __future__ import annotations

import importlib.util
import sys

from scratchrnn.core.cells.activations import NEGATIVE_SLOPE
from scratchrnn.core.stack import Layout

__all__ = ["ONNX_ACTIVATIONS", "onnx_translation_table", "register_with_exporter"]

# torch.onnx.export builds its table of translations from this module's list, ``_registry``.
_EXPORTER_TABLE = "torch.onnx._internal.exporter._registration"
_registered = False


def register_with_exporter() -> None:
    """Make ``torch.onnx.export`` translate our operator with no ``custom_translation_table``.

    The exporter builds its table from a list in torch (the one ``custom_translation_table``
    entries join, ``ONNXRegistry.register_op``); our entry is added to it once. Importing that
    part of torch imports onnxscript (most of a second), so importing scratchrnn does not: if it
    is not loaded yet, the entry is added right after it is (the first ``torch.onnx.export``).
    """
    global _registered
    if _registered:
        return
    if _EXPORTER_TABLE not in sys.modules:
        if not any(isinstance(f, _AfterImport) for f in sys.meta_path):
            sys.meta_path.insert(0, _AfterImport(_EXPORTER_TABLE, register_with_exporter))
        return
    from torch.onnx._internal.exporter._registration import OnnxDecompMeta
    from torch.onnx._internal.exporter._torchlib._torchlib_registry import _registry

    for target, function in onnx_translation_table().items():
        _registry.append(OnnxDecompMeta(onnx_function=function, fx_target=target, signature=None,
                                        is_custom=True))
    _registered = True


class _AfterImport:
    """An import-system finder that runs ``then()`` once the module ``name`` has been executed
    (found and loaded by the ordinary finders; this one steps aside after its one use)."""

    def __init__(self, name: str, then) -> None:
        self.name, self.then = name, then

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then(module) -> None:
            exec_module(module)
            self.then()

        spec.loader.exec_module = exec_then
        return spec


# The Elman cells ONNX's RNN operator computes: (its activation, its alpha), torch's leaky_relu
# slope as ours. gelu, silu and a user's Activation have no ONNX RNN activation.
ONNX_ACTIVATIONS = {"rnn_tanh": ("Tanh", None), "rnn_relu": ("Relu", None), "rnn_sigmoid": ("Sigmoid", None),
                    "rnn_softsign": ("Softsign", None), "rnn_leaky_relu": ("LeakyRelu", NEGATIVE_SLOPE)}


def onnx_translation_table() -> dict:
    """``{torch.ops.scratchrnn.rnn.default: translation}`` for ``torch.onnx.export``'s
    ``custom_translation_table`` argument."""
    import torch
    from onnxscript import opset18 as op

    def stack(tensors):  # [(G·H, ·)] * dirs → (dirs, G·H, ·)
        return op.Concat(*(op.Unsqueeze(t, [0]) for t in tensors), axis=0)

    def zrn(t, H):  # torch's gate rows r, z, n → ONNX's z, r, h
        rows = lambda a, b: op.Slice(t, [a * H], [b * H], [0])  # noqa: E731
        return op.Concat(rows(1, 2), rows(0, 1), rows(2, 3), axis=0)

    def rnn(x, hx, weights, masks, batch_sizes, num_layers, bidirectional, bias, cell):
        if cell != "gru" and cell not in ONNX_ACTIVATIONS:
            raise NotImplementedError(f"ONNX export of the cell {cell!r}: only gru and "
                                      f"{', '.join(ONNX_ACTIVATIONS)} (ONNX's RNN and GRU operators)")
        if batch_sizes is not None or masks:
            raise NotImplementedError("ONNX export of scratchrnn's RNNs: padded input in eval mode only")
        layout = Layout(num_layers, bidirectional, bias)
        dirs, H = layout.dirs, weights[1].shape[1]
        order = (lambda t: zrn(t, H)) if cell == "gru" else (lambda t: t)
        layer_in, h_n, outputs = x, [], []
        for layer in range(num_layers):
            ws = [[order(w) for w in layout.weights(weights, layer * dirs + d) if w is not None]
                  for d in range(dirs)]
            B = stack([op.Concat(w[2], w[3], axis=0) for w in ws]) if bias else None
            h0 = op.Slice(hx, [layer * dirs], [(layer + 1) * dirs], [0])  # (dirs, N, H)
            args = (layer_in, stack([w[0] for w in ws]), stack([w[1] for w in ws]), B, None, h0)
            direction = "bidirectional" if bidirectional else "forward"
            if cell == "gru":
                Y, Y_h = op.GRU(*args, direction=direction, hidden_size=H, linear_before_reset=1)
            else:
                activation, alpha = ONNX_ACTIVATIONS[cell]
                extra = {} if alpha is None else {"activation_alpha": [alpha] * dirs}
                Y, Y_h = op.RNN(*args, activations=[activation] * dirs, direction=direction,
                                hidden_size=H, **extra)
            layer_in = op.Reshape(op.Transpose(Y, perm=[0, 2, 1, 3]), [0, 0, -1])  # (T, N, dirs·H)
            outputs.append(layer_in)
            h_n.append(Y_h)
        # The inner layers' outputs, stacked (L − 1, T, N, dirs·H): a slice of none for L = 1.
        inner = op.Concat(*(op.Unsqueeze(h, [0]) for h in outputs[:-1]), axis=0) if num_layers > 1 \
            else op.Slice(op.Unsqueeze(layer_in, [0]), [0], [0], [0])
        return layer_in, op.Concat(*h_n, axis=0), inner

    return {torch.ops.scratchrnn.rnn.default: rnn}
