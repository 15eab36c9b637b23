"""A test plugin: trackers that go wrong on purpose, and a run killed mid-way, driven by the
environment so that only the session a test means is affected.

TRACKER_FAIL_START=NAME     that tracker raises as it starts
TRACKER_FAIL_AT=NAME:STEP   that tracker raises when it logs the scalars of STEP
KILL_AFTER_STEP=STEP        the process SIGKILLs itself once every tracker has the scalars of STEP
"""

from __future__ import annotations

import os
import signal

from nanogpt.training import trackers


def _fail_start(cls: type) -> None:
    def refuse(self, *args, **kwargs):
        raise ConnectionError("no server at the tracking URI (on purpose)")

    cls.__init__ = refuse


def _fail_at(cls: type, step: int) -> None:
    original = cls.scalars

    def scalars(self, at, values):
        if at == step:
            raise RuntimeError(f"the tracker broke at step {at} (on purpose)")
        original(self, at, values)

    cls.scalars = scalars


if os.environ.get("TRACKER_FAIL_START"):
    _fail_start(trackers.STARTERS[os.environ["TRACKER_FAIL_START"]])
if os.environ.get("TRACKER_FAIL_AT"):
    name, _, at = os.environ["TRACKER_FAIL_AT"].partition(":")
    _fail_at(trackers.STARTERS[name], int(at))
if os.environ.get("KILL_AFTER_STEP"):
    kill_after = int(os.environ["KILL_AFTER_STEP"])
    logged = trackers.Trackers.scalars

    def scalars_then_die(self, step, values):
        logged(self, step, values)
        if step >= kill_after and "loss/train_step" in values:
            self.flush()  # what a tracker had sent by the kill (MLflow sends in the background)
            os.kill(os.getpid(), signal.SIGKILL)

    trackers.Trackers.scalars = scalars_then_die
