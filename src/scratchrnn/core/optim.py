r"""Parameter updates by hand: SGD with momentum, Adagrad, Adam, AdamW, and global-norm clipping.

For a parameter θ with gradient g at step t (t = 1, 2, …), learning rate η, weight decay λ:

    SGD         g ← g + λθ;  b ← μ b + (1 − τ) g  (b₁ = g);  θ ← θ − η b
                (Nesterov: θ ← θ − η (g + μ b))
    Adagrad     g ← g + λθ;  G ← G + g²;  θ ← θ − η_t g / (√G + ε),  η_t = η / (1 + (t − 1) decay)
                (min-char-rnn's update, with ε outside the root as torch.optim.Adagrad has it)
    Adam        g ← g + λθ;  m ← β₁ m + (1 − β₁) g;  v ← β₂ v + (1 − β₂) g²;
                θ ← θ − η m̂ / (√v̂ + ε),  m̂ = m / (1 − β₁ᵗ),  v̂ = v / (1 − β₂ᵗ)
    AdamW       θ ← θ (1 − ηλ) (decoupled decay, Loshchilov & Hutter 2019), then Adam with λ = 0

and clipping by the global norm (Pascanu, Mikolov & Bengio 2013), over all parameters at once:

    ‖g‖ = √(Σ_p Σ g_p²);   g_p ← g_p · min(1, c / (‖g‖ + 10⁻⁶))

Each optimizer is a ``torch.optim.Optimizer`` (param groups, ``state_dict``, ``zero_grad`` and
learning-rate schedulers work as usual) whose ``step`` is the rule above, written with
``torch._foreach_*`` ops: one call per rule for all the parameters of a group, not one per tensor.
Each matches its torch.optim twin (same arguments, same defaults) to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

__all__ = ["OPTIMIZERS", "SGD", "Adagrad", "Adam", "AdamW", "clip_grad_norm_", "make_optimizer"]


def _check_lr(lr: float) -> None:
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"learning rate must be a positive number, got {lr!r}")


class _HandWritten(torch.optim.Optimizer):
    """The loop every optimizer here shares: for each parameter group, the parameters that have a
    gradient and their gradients go to ``_update``, which writes the update rule."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._update(group, params, [p.grad for p in params])
        return loss

    def _update(self, group: dict, params: list[Tensor], g: list[Tensor]) -> None:
        raise NotImplementedError


def _l2(g: list[Tensor], params: list[Tensor], wd: float) -> list[Tensor]:
    """g ← g + λθ (L2 weight decay, as a new list), or g itself when λ = 0."""
    return torch._foreach_add(g, params, alpha=wd) if wd else g


class SGD(_HandWritten):
    """SGD with momentum μ (and optional Nesterov), dampening τ, L2 weight decay λ."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        _check_lr(lr)
        if momentum < 0 or weight_decay < 0:
            raise ValueError(f"momentum and weight decay must be ≥ 0, got {momentum}, {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults)

    def _update(self, group: dict, params: list[Tensor], g: list[Tensor]) -> None:
        lr, mu, tau = group["lr"], group["momentum"], group["dampening"]
        g = _l2(g, params, group["weight_decay"])  # g ← g + λθ
        if mu:
            old_b, old_g = [], []
            for p, g_p in zip(params, g, strict=True):
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = g_p.clone()  # b₁ = g
                else:
                    old_b.append(state["momentum_buffer"])
                    old_g.append(g_p)
            if old_b:
                torch._foreach_mul_(old_b, mu)  # b ← μ b + (1 − τ) g
                torch._foreach_add_(old_b, old_g, alpha=1 - tau)
            b = [self.state[p]["momentum_buffer"] for p in params]
            g = torch._foreach_add(g, b, alpha=mu) if group["nesterov"] else b
        torch._foreach_add_(params, g, alpha=-lr)  # θ ← θ − η b


class Adagrad(_HandWritten):
    """Adagrad: per-coordinate steps η / (√G + ε), G the running sum of squared gradients."""

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10) -> None:
        _check_lr(lr)
        defaults = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, eps=eps)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["step"] = torch.tensor(0.0)
                self.state[p]["sum"] = torch.full_like(p, group["initial_accumulator_value"])

    def _update(self, group: dict, params: list[Tensor], g: list[Tensor]) -> None:
        states = [self.state[p] for p in params]
        G = [s["sum"] for s in states]
        for s in states:
            s["step"] += 1
        t = states[0]["step"].item()
        g = _l2(g, params, group["weight_decay"])  # g ← g + λθ
        torch._foreach_addcmul_(G, g, g)  # G ← G + g²
        std = torch._foreach_sqrt(G)
        torch._foreach_add_(std, group["eps"])  # √G + ε
        lr_t = group["lr"] / (1 + (t - 1) * group["lr_decay"])
        torch._foreach_addcdiv_(params, g, std, value=-lr_t)  # θ ← θ − η_t g / (√G + ε)


class Adam(_HandWritten):
    """Adam (Kingma & Ba 2015) with bias correction; ``weight_decay`` is L2 (added to g)."""

    _decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        _check_lr(lr)
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if weight_decay < 0:
            raise ValueError(f"weight decay must be ≥ 0, got {weight_decay}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)

    def _update(self, group: dict, params: list[Tensor], g: list[Tensor]) -> None:
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        for p in params:
            if not self.state[p]:
                self.state[p]["step"] = torch.tensor(0.0)
                self.state[p]["exp_avg"] = torch.zeros_like(p)
                self.state[p]["exp_avg_sq"] = torch.zeros_like(p)
        states = [self.state[p] for p in params]
        m = [s["exp_avg"] for s in states]
        v = [s["exp_avg_sq"] for s in states]
        for s in states:
            s["step"] += 1
        t = states[0]["step"].item()
        if self._decoupled and wd:
            torch._foreach_mul_(params, 1 - lr * wd)  # θ ← θ (1 − ηλ)
        elif not self._decoupled:
            g = _l2(g, params, wd)  # g ← g + λθ
        torch._foreach_lerp_(m, g, 1 - beta1)  # m ← β₁ m + (1 − β₁) g
        torch._foreach_mul_(v, beta2)  # v ← β₂ v + (1 − β₂) g²
        torch._foreach_addcmul_(v, g, g, value=1 - beta2)
        bias1, bias2 = 1 - beta1**t, 1 - beta2**t
        denom = torch._foreach_sqrt(v)  # √v̂ + ε = √v / √(1 − β₂ᵗ) + ε
        torch._foreach_div_(denom, math.sqrt(bias2))
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, m, denom, value=-lr / bias1)  # θ ← θ − η m̂ / (√v̂ + ε)


class AdamW(Adam):
    """Adam with decoupled weight decay (default λ = 0.01, as torch.optim.AdamW)."""

    _decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)


OPTIMIZERS = {"adam": Adam, "adamw": AdamW, "sgd": SGD, "adagrad": Adagrad}


def make_optimizer(name: str, params, lr: float, weight_decay: float = 0.0,
                   momentum: float = 0.9) -> torch.optim.Optimizer:
    """One of :data:`OPTIMIZERS` by name; ``momentum`` is used by SGD only."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
    if name == "sgd":
        return SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return OPTIMIZERS[name](params, lr=lr, weight_decay=weight_decay)


@torch.no_grad()
def clip_grad_norm_(params: Iterable[Tensor], max_norm: float) -> Tensor:
    """Scale all gradients by min(1, max_norm / (‖g‖ + 10⁻⁶)), ‖g‖ the norm of all of them
    together; returns ‖g‖ before clipping (as torch.nn.utils.clip_grad_norm_)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norms = torch._foreach_norm(grads)  # ‖g_p‖ per parameter
    total = torch.linalg.vector_norm(torch.stack(norms))  # ‖g‖ = √(Σ_p ‖g_p‖²)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    torch._foreach_mul_(grads, coef)  # g_p ← g_p · min(1, c / (‖g‖ + 10⁻⁶))
    return total
