"""A test plugin: schedules that go wrong on purpose, to exercise the runner's failure paths.

`nan_at` returns a NaN learning rate from one iteration on (the weights, then the loss, become
NaN); `raise_at` raises on one rank at one iteration (a crashing process in a distributed job);
`sleep` slows every step so a test can signal a run mid-way.
"""

from __future__ import annotations

import os
import time

import attrs

from nanogpt.registry import SCHEDULES
from nanogpt.config.tables import ScheduleSpec


@attrs.frozen(kw_only=True)
class NanAtSpec(ScheduleSpec):
    kind: str = "nan_at"
    iteration: int = 5


@SCHEDULES.register("nan_at", NanAtSpec)
def build_nan_at(spec: NanAtSpec, *, lr: float):
    return lambda it: float("nan") if it >= spec.iteration else lr


@attrs.frozen(kw_only=True)
class RaiseAtSpec(ScheduleSpec):
    kind: str = "raise_at"
    iteration: int = 3
    rank: int = 1


@SCHEDULES.register("raise_at", RaiseAtSpec)
def build_raise_at(spec: RaiseAtSpec, *, lr: float):
    def lr_at(it: int) -> float:
        if it == spec.iteration and int(os.environ.get("RANK", "0")) == spec.rank:
            raise RuntimeError(f"injected failure at iteration {it}")
        return lr

    return lr_at


@attrs.frozen(kw_only=True)
class SleepSpec(ScheduleSpec):
    kind: str = "sleep"
    seconds: float = 0.05


@SCHEDULES.register("sleep", SleepSpec)
def build_sleep(spec: SleepSpec, *, lr: float):
    def lr_at(it: int) -> float:
        time.sleep(spec.seconds)
        return lr

    return lr_at


@attrs.frozen(kw_only=True)
class FailOnceSpec(ScheduleSpec):
    """Raises on one rank at one iteration, but only in the first attempt of a torchrun job."""

    kind: str = "fail_once"
    iteration: int = 13
    rank: int = 1


@SCHEDULES.register("fail_once", FailOnceSpec)
def build_fail_once(spec: FailOnceSpec, *, lr: float):
    def lr_at(it: int) -> float:
        first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if first_attempt and it == spec.iteration and int(os.environ.get("RANK", "0")) == spec.rank:
            raise RuntimeError(f"injected failure at iteration {it} (first attempt only)")
        return lr

    return lr_at
