"""Learning-rate schedules: pure functions from an iteration to a learning rate.

Each builder takes its own `[schedule]` table and the optimizer's peak lr, and returns
`lr_at(iteration) -> float`. Pure functions of the iteration make resume exact: there is no
scheduler state to save.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from nanogpt.config.tables import ConstantSpec, CosineSpec, LinearSpec, WSDSpec

LRSchedule = Callable[[int], float]


def _warmup(it: int, warmup_iters: int, lr: float) -> float:
    # (it + 1) so that the very first step already learns something (the seed's it/warmup gives 0)
    return lr * (it + 1) / (warmup_iters + 1)


def _warmup_then_decay(spec: CosineSpec | LinearSpec, lr: float, remaining: Callable[[float], float]) -> LRSchedule:
    """Warmup, then from lr down to min_lr at decay_iters along `remaining(progress)` (1 -> 0), then flat."""

    def lr_at(it: int) -> float:
        if it < spec.warmup_iters:
            return _warmup(it, spec.warmup_iters, lr)
        if it >= spec.decay_iters:
            return spec.min_lr
        progress = (it - spec.warmup_iters) / max(1, spec.decay_iters - spec.warmup_iters)
        return spec.min_lr + remaining(progress) * (lr - spec.min_lr)

    return lr_at


def build_cosine(spec: CosineSpec, *, lr: float) -> LRSchedule:
    return _warmup_then_decay(spec, lr, lambda p: 0.5 * (1.0 + math.cos(math.pi * p)))


def build_linear(spec: LinearSpec, *, lr: float) -> LRSchedule:
    return _warmup_then_decay(spec, lr, lambda p: 1.0 - p)


def build_constant(spec: ConstantSpec, *, lr: float) -> LRSchedule:
    def lr_at(it: int) -> float:
        return _warmup(it, spec.warmup_iters, lr) if it < spec.warmup_iters else lr

    return lr_at


def build_wsd(spec: WSDSpec, *, lr: float) -> LRSchedule:
    cooldown_start = spec.decay_iters - spec.cooldown_iters

    def lr_at(it: int) -> float:
        if it < spec.warmup_iters:
            return _warmup(it, spec.warmup_iters, lr)
        if it < cooldown_start:
            return lr
        if it >= spec.decay_iters:
            return spec.min_lr
        progress = (it - cooldown_start) / max(1, spec.cooldown_iters)  # 0 -> 1
        remaining = {
            "linear": 1.0 - progress,
            "sqrt": 1.0 - math.sqrt(progress),
            "cosine": 0.5 * (1.0 + math.cos(math.pi * progress)),
        }[spec.cooldown]
        return spec.min_lr + remaining * (lr - spec.min_lr)

    return lr_at
