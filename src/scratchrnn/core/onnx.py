"""ONNX export: ``torch.ops.scratchrnn.rnn`` translated into ONNX's own ``RNN`` or ``GRU`` operator,
one per layer.

    >>> torch.onnx.export(model, (x,), "model.onnx", custom_translation_table=onnx_translation_table())

ONNX's RNN computes, per direction, H_t = f(X_t Wᵀ + H_{t-1} Rᵀ + Wb + Rb) with W (dirs, H, D),
R (dirs, H, H), B = [Wb | Rb] (dirs, 2H) and outputs Y (T, dirs, N, H), Y_h (dirs, N, H): our
W_ih, W_hh, b_ih, b_hh stacked over the directions. ONNX's GRU takes the same with 3H rows, its
gates in z, r, h order (ours, torch's, are r, z, n: the rows are reordered) and
``linear_before_reset=1``: the reset gate applied after the recurrent product, as ours. A stacked
RNN is one ONNX operator per layer, each reading the previous one's Y as (T, N, dirs·H). Padded
input in eval mode only: a PackedSequence or dropout masks have no ONNX counterpart here.
onnxscript is imported only when this is called (an optional dependency: ``pip install
scratchrnn[onnx]``).
"""

from __future__ import annotations

from scratchrnn.core.stack import Layout

__all__ = ["onnx_translation_table"]


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
        if batch_sizes is not None or masks:
            raise NotImplementedError("ONNX export of scratchrnn's RNNs: padded input in eval mode only")
        if cell not in ("rnn_tanh", "rnn_relu", "gru"):
            raise NotImplementedError(f"ONNX export of the cell {cell!r}: only rnn_tanh, rnn_relu, gru")
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
                Y, Y_h = op.RNN(*args, activations=["Tanh" if cell == "rnn_tanh" else "Relu"] * dirs,
                                direction=direction, hidden_size=H)
            layer_in = op.Reshape(op.Transpose(Y, perm=[0, 2, 1, 3]), [0, 0, -1])  # (T, N, dirs·H)
            outputs.append(layer_in)
            h_n.append(Y_h)
        # The inner layers' outputs, stacked (L − 1, T, N, dirs·H): a slice of none for L = 1.
        inner = op.Concat(*(op.Unsqueeze(h, [0]) for h in outputs[:-1]), axis=0) if num_layers > 1 \
            else op.Slice(op.Unsqueeze(layer_in, [0]), [0], [0], [0])
        return layer_in, op.Concat(*h_n, axis=0), inner

    return {torch.ops.scratchrnn.rnn.default: rnn}
