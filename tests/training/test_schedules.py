"""Every schedule's shape, as properties over valid schedule tables and peak learning rates."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from nanogpt.registry import SCHEDULES
from nanogpt.config.tables import ConstantSpec, CosineSpec, LinearSpec, WSDSpec

lrs = st.floats(1e-6, 10.0)


@st.composite
def decay_schedules(draw):
    """A valid cosine, linear or wsd table and a peak lr at least its min_lr."""
    lr = draw(lrs)
    decay_iters = draw(st.integers(1, 5000))
    min_lr = draw(st.floats(0.0, lr))
    kind = draw(st.sampled_from([CosineSpec, LinearSpec, WSDSpec]))
    if kind is WSDSpec:
        fraction = draw(st.floats(0.01, 1.0))
        spec = WSDSpec(decay_iters=decay_iters, cooldown_fraction=fraction, min_lr=min_lr, warmup_iters=0)
        warmup = draw(st.integers(0, decay_iters - spec.cooldown_iters))
        spec = WSDSpec(decay_iters=decay_iters, cooldown_fraction=fraction, min_lr=min_lr, warmup_iters=warmup,
                       cooldown=draw(st.sampled_from(["linear", "sqrt", "cosine"])))
    else:
        spec = kind(decay_iters=decay_iters, min_lr=min_lr, warmup_iters=draw(st.integers(0, decay_iters)))
    return spec, lr


def _close_le(a: float, b: float) -> bool:
    return a <= b or math.isclose(a, b, rel_tol=1e-12)


@given(decay_schedules(), st.integers(0, 10_000))
def test_after_warmup_lr_stays_within_min_lr_and_lr(case, it):
    """Past the warmup, every decaying schedule stays within [min_lr, lr]."""
    spec, lr = case
    lr_at = SCHEDULES.build(spec, lr=lr)
    if it >= spec.warmup_iters:
        assert _close_le(spec.min_lr, lr_at(it)) and _close_le(lr_at(it), lr)


@given(decay_schedules())
def test_warmup_rises_to_lr_then_never_rises_again(case):
    """The warmup rises strictly to the peak; after it the lr never goes up, and ends at min_lr."""
    spec, lr = case
    lr_at = SCHEDULES.build(spec, lr=lr)
    warm = [lr_at(i) for i in range(spec.warmup_iters)]
    assert all(0 < a < b for a, b in zip(warm, warm[1:]))
    assert all(0 < v <= lr for v in warm)
    after = [lr_at(i) for i in range(spec.warmup_iters, spec.decay_iters + 3)]
    assert all(_close_le(b, a) for a, b in zip(after, after[1:]))
    assert after[-1] == spec.min_lr


@given(lrs, st.integers(0, 500), st.integers(0, 2000))
def test_constant_is_the_peak_after_its_warmup(lr, warmup, it):
    """The constant schedule is the optimizer's lr once warmed up, and below it during the warmup."""
    lr_at = SCHEDULES.build(ConstantSpec(warmup_iters=warmup), lr=lr)
    assert lr_at(it) == lr if it >= warmup else 0 < lr_at(it) < lr


def test_cosine_is_halfway_at_the_middle_of_its_decay():
    """Cosine decay passes the mean of lr and min_lr halfway between warmup and decay_iters."""
    lr_at = SCHEDULES.build(CosineSpec(warmup_iters=100, decay_iters=1100, min_lr=1e-4), lr=1e-3)
    assert math.isclose(lr_at(600), (1e-3 + 1e-4) / 2)
    assert lr_at(100) == 1e-3 and lr_at(1100) == 1e-4


def test_wsd_holds_the_peak_until_its_cooldown():
    """Warmup-stable-decay holds lr until the last cooldown_fraction of decay_iters, then decays."""
    lr_at = SCHEDULES.build(WSDSpec(warmup_iters=10, decay_iters=100, cooldown_fraction=0.2, min_lr=0.0), lr=1.0)
    assert [lr_at(i) for i in (10, 50, 80)] == [1.0, 1.0, 1.0]
    assert lr_at(90) == 0.5 and lr_at(100) == 0.0
