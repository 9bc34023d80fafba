r"""The character-level language model: embedding → RNN → output layer → softmax, all by hand.

Shapes: T time steps, N streams (batch), V vocabulary size, E embedding size, H hidden units;
R = T·N rows when the time and batch axes are flattened. Everything is time-major, (T, N, ...).

Forward, for character ids c_t (N,) and targets c_{t+1}:

    x_t    = W_emb[c_t]                          embedding lookup          (N, E)
    h_t    = RNN(x_t, h_{t-1})                   scratchrnn.RNN            (N, H)
    y_t    = h_t W_hyᵀ + b_y                     output layer (logits)     (N, V)
    p_t    = softmax(y_t)                        next-character probabilities
    L      = −(1/R) Σ_t Σ_n log p_t[n, c_{t+1}]  mean cross-entropy, nats/char

Backward, each rule next to its forward (the RNN's BPTT is :mod:`scratchrnn.core.functional`'s):

    dlogits = (p − onehot(c_{t+1})) / R          softmax and cross-entropy in one step
    dW_hy   = dlogitsᵀ h                         (V, H)
    db_y    = Σ_rows dlogits                     (V,)
    dh      = dlogits W_hy                       (R, H), into the RNN's backward
    dW_emb  = Σ_t onehot(c_t)ᵀ dx_t              scatter-add of dx into the rows of the characters seen

Dropout (inverted, probability p, in training only) acts on the output of every RNN layer: between
layers inside :class:`scratchrnn.RNN`, and on the last layer's output here: h̃ = h ⊙ m, dh = dh̃ ⊙ m.

Each rule is an ``autograd.Function`` whose backward is the line above, so ``loss.backward()`` runs
our code and leaves the gradients in the parameters' ``.grad``, as for any torch module. The
backwards are written in differentiable torch operations: when a graph of the backward is wanted
(``create_graph=True``), autograd records them, and the second derivative is autograd applied to
these hand-written rules (the softmax's from p = softmax(y), recomputed from the saved logits).
The Functions have no custom ``jvp``, so torch.compile and torch.export trace them whole.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchrnn.core import accel
from scratchrnn.core.modules import GRU, RNN

__all__ = ["CharRNN", "CharRNNConfig", "TorchCharRNN", "cross_entropy", "generate"]


# --------------------------------------------------------------------------------------------
# The rules, each with its hand-written backward.
# --------------------------------------------------------------------------------------------


def _matmul(A: Tensor, B: Tensor) -> Tensor:
    """A @ B: ``accel.matmul`` (oneDNN for large float32) in eager mode without a graph; torch's
    own product when autograd must record it or a compiler traces it (oneDNN's has no derivative)."""
    if torch.is_grad_enabled() or torch.compiler.is_compiling():
        return A @ B
    return accel.matmul(A, B)


class _Embedding(torch.autograd.Function):
    """x = W_emb[ids];  dW_emb = scatter-add of dx into the rows of ids."""

    @staticmethod
    def forward(ids: Tensor, W_emb: Tensor) -> Tensor:
        return W_emb[ids]  # (..., E)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ids, W_emb = inputs
        ctx.save_for_backward(ids)
        ctx.V = W_emb.shape[0]

    @staticmethod
    def backward(ctx, dx: Tensor):
        (ids,) = ctx.saved_tensors
        E = dx.shape[-1]
        dW_emb = dx.new_zeros(ctx.V, E).index_add(0, ids.reshape(-1), dx.reshape(-1, E))  # (V, E)
        return None, dW_emb


class _Linear(torch.autograd.Function):
    """y = h W_hyᵀ + b_y;  dW_hy = dyᵀ h,  db_y = Σ_rows dy,  dh = dy W_hy.

    The three products are large (R·H·V multiply-adds each); ``accel.matmul`` sends them to
    oneDNN for float32 on the CPU, else torch.mm.
    """

    @staticmethod
    def forward(h: Tensor, W_hy: Tensor, b_y: Tensor) -> Tensor:
        return _matmul(h, W_hy.t()).add_(b_y)  # (R, V)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        h, W_hy, _ = inputs
        ctx.save_for_backward(h, W_hy)

    @staticmethod
    def backward(ctx, dy: Tensor):
        h, W_hy = ctx.saved_tensors
        need_h, need_W, need_b = ctx.needs_input_grad
        dh = _matmul(dy, W_hy) if need_h else None  # (R, H)
        # dyᵀ made row-major first (a small copy): oneDNN takes only dense operands
        dW_hy = _matmul(dy.t().contiguous(), h) if need_W else None  # (V, H)
        db_y = dy.sum(0) if need_b else None  # (V,)
        return dh, dW_hy, db_y


class _SoftmaxCrossEntropy(torch.autograd.Function):
    """L = −mean_r log softmax(y_r)[c_r];  dlogits = (softmax(y) − onehot(c)) / R."""

    @staticmethod
    def forward(logits: Tensor, targets: Tensor) -> Tensor:
        logp = torch.log_softmax(logits, 1)  # (R, V) y − log Σ_v exp(y_v), without overflow
        return -logp.gather(1, targets.unsqueeze(1)).mean()  # ()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs)  # the logits, not log p: a second derivative needs them

    @staticmethod
    def backward(ctx, dloss: Tensor):
        logits, targets = ctx.saved_tensors
        R = logits.shape[0]
        p = torch.softmax(logits, 1)  # (R, V) softmax(y)
        onehot = torch.zeros_like(p).scatter_(1, targets.unsqueeze(1), 1)  # (R, V)
        dlogits = (p - onehot) * (dloss / R)  # (R, V)
        return dlogits, None


class _Dropout(torch.autograd.Function):
    """h̃ = h ⊙ m;  dh = dh̃ ⊙ m (m is 0 or 1 / (1 − p))."""

    @staticmethod
    def forward(h: Tensor, m: Tensor) -> Tensor:
        return h * m

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[1])

    @staticmethod
    def backward(ctx, dh_tilde: Tensor):
        (m,) = ctx.saved_tensors
        return dh_tilde * m, None


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean softmax cross-entropy in nats, with the hand-written backward.

    Args:
        logits: (R, V) or (T, N, V). targets: (R,) or (T, N) int64 in [0, V).

    Returns:
        a scalar tensor, −(1/R) Σ log softmax(logits)[target]; ``F.cross_entropy``'s value.
    """
    V = logits.shape[-1]
    return _SoftmaxCrossEntropy.apply(logits.reshape(-1, V), targets.reshape(-1))


# --------------------------------------------------------------------------------------------
# The model.
# --------------------------------------------------------------------------------------------


@dataclass
class CharRNNConfig:
    """What it takes to rebuild a :class:`CharRNN` (saved in every checkpoint).

    ``embedding_dim = 0`` feeds one-hot vectors (D = V) instead of a learned embedding.
    """

    vocab_size: int
    embedding_dim: int = 64
    hidden_size: int = 640
    num_layers: int = 1
    dropout: float = 0.0
    cell: str = "rnn"  # or "gru"; the options of docs/options.md below (defaults: none)
    nonlinearity: str = "tanh"
    layer_norm: bool = False
    recurrent_dropout: float = 0.0
    weight_drop: float = 0.0
    zoneout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name.replace('_', ' ')} must be a positive integer, got {value!r}")
        if isinstance(self.embedding_dim, bool) or not isinstance(self.embedding_dim, int) \
                or self.embedding_dim < 0:
            raise ValueError(
                f"embedding dim must be a positive integer (or 0 for one-hot), got {self.embedding_dim!r}"
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.cell not in ("rnn", "gru"):
            raise ValueError(f"cell must be 'rnn' or 'gru', got {self.cell!r}")

    @property
    def input_size(self) -> int:
        """D, what the RNN's first layer reads: the embedding size, or V for one-hot input."""
        return self.embedding_dim or self.vocab_size

    def to_dict(self) -> dict:
        return asdict(self)


class _CharModel(nn.Module):
    """What :class:`CharRNN` and :class:`TorchCharRNN` share: the constructor's arguments, the
    configuration and its properties; each builds its own parts in ``_build``."""

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int = 64,
        hidden_size: int = 640,
        num_layers: int = 1,
        dropout: float = 0.0,
        **options,
    ) -> None:
        super().__init__()
        self.config = CharRNNConfig(vocab_size, embedding_dim, hidden_size, num_layers, dropout, **options)
        self._build(self.config)

    def _build(self, config: CharRNNConfig) -> None:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    def init_state(self, N: int) -> Tensor:
        """Zeros, (L, N, H)."""
        return self.head.weight.new_zeros(self.num_layers, N, self.hidden_size)

    def _recurrent(self, config: CharRNNConfig) -> nn.Module:
        """scratchrnn.RNN or GRU with the config's options (docs/options.md)."""
        options = {"layer_norm": config.layer_norm, "recurrent_dropout": config.recurrent_dropout,
                   "weight_drop": config.weight_drop, "zoneout": config.zoneout}
        if config.cell == "gru":
            return GRU(config.input_size, config.hidden_size, config.num_layers,
                       dropout=self._rnn_dropout(), **options)
        return RNN(config.input_size, config.hidden_size, config.num_layers, config.nonlinearity,
                   dropout=self._rnn_dropout(), **options)

    def _rnn_dropout(self) -> float:
        """The RNN's own dropout is between layers; the last layer's output is dropped by the model."""
        return self.config.dropout if self.config.num_layers > 1 else 0.0


class _Holder(nn.Module):
    """A module that only holds parameters (the arithmetic is in the Functions above) and prints as
    the torch module it stands for (``Embedding(65, 64)``, as TorchCharRNN's), not ``Module()``."""

    def __init__(self, kind: str, description: str) -> None:
        super().__init__()
        self.kind, self.description = kind, description

    def _get_name(self) -> str:
        return self.kind

    def extra_repr(self) -> str:
        return self.description


class CharRNN(_CharModel):
    r"""A character-level language model: embedding → :class:`scratchrnn.RNN` → output layer.

    Every gradient is hand-written: the embedding's, the output layer's and the softmax
    cross-entropy's here, the RNN's in :mod:`scratchrnn.core.functional`.

    Args:
        vocab_size: V. embedding_dim: E (0: one-hot input). hidden_size: H. num_layers: L.
        dropout: inverted dropout on the output of every RNN layer, in training only.

    Inputs: ids, h0
        - **ids**: (T, N) int64 character ids (time-major).
        - **h0**: (L, N, H) initial state, zeros if omitted.

    Outputs: logits, h_n
        - **logits**: (T, N, V), y_t = h_t W_hyᵀ + b_y, unnormalised log-probabilities.
        - **h_n**: (L, N, H), the state after the last step (carry it, detached, to the next chunk).

    Parameters: ``embedding.weight`` W_emb (V, E); ``rnn.*`` as in nn.RNN; ``head.weight`` W_hy
    (V, H) and ``head.bias`` b_y (V,). :class:`TorchCharRNN` has the same names, so state_dicts
    load both ways.

    Example:
        >>> model = CharRNN(65, embedding_dim=16, hidden_size=32)
        >>> logits, h = model(torch.randint(65, (10, 4)))  # (10, 4, 65), (1, 4, 32)
    """

    def _build(self, config: CharRNNConfig) -> None:
        V, E, H = config.vocab_size, config.embedding_dim, config.hidden_size
        # Modules as plain parameter holders (same names and init draws as TorchCharRNN's
        # nn.Embedding / nn.RNN / nn.Linear); the arithmetic is in the Functions above.
        self.embedding = _Holder("Embedding", f"{V}, {E}") if E else _Holder("OneHot", f"{V}")
        if E:
            self.embedding.weight = nn.Parameter(torch.randn(V, E))  # nn.Embedding's N(0, 1)
        self.rnn = self._recurrent(config)
        self.head = _Holder("Linear", f"in_features={H}, out_features={V}, bias=True")
        bound = 1 / math.sqrt(H)  # nn.Linear's U(−1/√H, 1/√H), weight first, then bias
        self.head.weight = nn.Parameter(torch.empty(V, H).uniform_(-bound, bound))
        self.head.bias = nn.Parameter(torch.empty(V).uniform_(-bound, bound))

    def embed(self, ids: Tensor) -> Tensor:
        """(T, N) ids → (T, N, D) RNN input: W_emb[ids], or one-hot rows when E = 0."""
        if self.config.embedding_dim:
            return _Embedding.apply(ids, self.embedding.weight)
        return F.one_hot(ids, self.vocab_size).to(self.head.weight.dtype)  # constant: no gradient

    def forward(self, ids: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if ids.dim() != 2:
            raise ValueError(f"CharRNN: expected ids of shape (T, N), got {tuple(ids.shape)}")
        T, N = ids.shape
        x = self.embed(ids)  # (T, N, D)
        h, h_n = self.rnn(x, h0)  # (T, N, H), (L, N, H)
        p = self.config.dropout
        if self.training and p > 0:
            h = _Dropout.apply(h, torch.empty_like(h).bernoulli_(1 - p).div_(1 - p))
        logits = _Linear.apply(h.reshape(T * N, -1), self.head.weight, self.head.bias)  # (R, V)
        return logits.view(T, N, -1), h_n


class TorchCharRNN(_CharModel):
    """The same model built from torch's parts (nn.Embedding, nn.RNN, nn.Linear, autograd): the
    baseline that the benchmarks and tests compare :class:`CharRNN` with.

    Same arguments, inputs, outputs, parameter names and initial values for a given seed as
    :class:`CharRNN`; pair it with ``F.cross_entropy`` and a ``torch.optim`` optimizer.
    """

    def _build(self, config: CharRNNConfig) -> None:
        V, E, H = config.vocab_size, config.embedding_dim, config.hidden_size
        if E:
            self.embedding = nn.Embedding(V, E)
        for name in ("layer_norm", "recurrent_dropout", "weight_drop", "zoneout"):
            if getattr(config, name):
                raise ValueError(f"{name}: torch's RNN has none; expected its default, got "
                                 f"{getattr(config, name)!r}")
        if config.cell == "gru":
            self.rnn = nn.GRU(config.input_size, H, config.num_layers, dropout=self._rnn_dropout())
        else:
            self.rnn = nn.RNN(config.input_size, H, config.num_layers, config.nonlinearity,
                              dropout=self._rnn_dropout())
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(H, V)

    def forward(self, ids: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.config.embedding_dim:
            x = self.embedding(ids)
        else:
            x = F.one_hot(ids, self.vocab_size).to(self.head.weight.dtype)
        h, h_n = self.rnn(x, h0)
        return self.head(self.drop(h)), h_n


# --------------------------------------------------------------------------------------------
# Generation.
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt_ids: Tensor,
    length: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sample ``length`` characters after a prompt, one at a time, feeding each back in.

    Args:
        model: a :class:`CharRNN` (or anything with its interface), switched to eval mode here
            and restored afterwards.
        prompt_ids: (P,) int64 ids, P ≥ 1; the state after reading them starts the sampling.
        length: the number of characters to sample.
        temperature: the logits are divided by it before the softmax (< 1: safer, > 1: wilder);
            0: greedy, the likeliest character every time (the generator is not used).
        top_k: sample among the k most likely characters only (None: all).
        generator: a seeded ``torch.Generator`` makes the text reproducible.

    Returns:
        (length,) int64, the sampled ids (without the prompt).
    """
    if prompt_ids.dim() != 1 or len(prompt_ids) == 0:
        raise ValueError("the prompt must be a non-empty 1-D sequence of ids")
    if not temperature >= 0:
        raise ValueError(f"temperature must be ≥ 0 (0: greedy), got {temperature}")
    if top_k is not None and top_k <= 0:
        raise ValueError(f"top-k must be a positive integer, got {top_k}")
    was_training = model.training
    model.eval()
    try:
        logits, h = model(prompt_ids.unsqueeze(1))  # (P, 1, V), (L, 1, H)
        y = logits[-1, 0]  # (V,)
        out = torch.empty(length, dtype=torch.long)
        for i in range(length):
            if temperature == 0:  # the limit of the softmax as the temperature goes to 0
                c = y.argmax().view(1)  # (1,)
            else:
                y = y / temperature
                if top_k is not None and top_k < y.numel():
                    kth = torch.topk(y, top_k).values[-1]
                    y = y.masked_fill(y < kth, -math.inf)
                p = torch.softmax(y, 0)  # (V,)
                c = torch.multinomial(p, 1, generator=generator)  # (1,)
            out[i] = c[0]
            logits, h = model(c.view(1, 1), h)
            y = logits[0, 0]
        return out
    finally:
        model.train(was_training)
