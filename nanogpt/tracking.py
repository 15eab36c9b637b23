"""TensorBoard logging on rank 0; every other rank gets a tracker that does nothing.

Event files go into the run directory itself, so `tensorboard --logdir runs` shows each run as
`<name>/<run_id>`, with the same tags in every run:

    loss/train, loss/val        periodic estimates over the fixed evaluation batches
    loss/train_step             the training loss of each logged iteration
    lr, grad_norm, tokens_per_sec, mfu
    perplexity/train, perplexity/val
    spec (text)                 the resolved spec, and its difference from what it extends
    samples (text)              generations at evaluations
    hparams                     the spec's scalar fields (and a sweep member's sweep id and index)
                                with the final metrics (HParams tab)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class Tracker:
    """Does nothing: what every rank but 0 has, and what rank 0 has when tensorboard = false."""

    def scalars(self, step: int, values: dict[str, float | None]) -> None:
        pass

    def text(self, tag: str, text: str, step: int = 0) -> None:
        pass

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float | None]) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker(Tracker):
    def __init__(self, run_dir: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events a killed run logged after its last checkpoint, so a resumed
        # run's curves do not double back on themselves.
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step, flush_secs=10)

    def scalars(self, step: int, values: dict[str, float | None]) -> None:
        for tag, value in values.items():
            if value is not None:
                self.writer.add_scalar(tag, value, global_step=step)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        self.writer.add_text(tag, text, global_step=step)

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float | None]) -> None:
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        metrics = {k: v for k, v in metrics.items() if v is not None}
        # Written into this run's own event file (SummaryWriter.add_hparams would make a sub-run),
        # naming scalar tags the run already has, so the HParams tab shows their last values.
        for summary in hparams_summary(hparams, metrics):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def build_tracker(run_dir: Path, *, enabled: bool, is_main: bool, purge_step: int | None = None) -> Tracker:
    if enabled and is_main:
        return TensorBoardTracker(run_dir, purge_step)
    return Tracker()


def markdown_code(text: str) -> str:
    """TensorBoard renders text as Markdown: indent so TOML and samples keep their lines."""
    return "\n".join("    " + line for line in text.splitlines())


def flat_hparams(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A resolved spec flattened to dotted keys with values TensorBoard's HParams tab accepts."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_hparams(value, path + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[path] = value
        else:
            out[path] = str(value)
    return out


def run_hparams(manifest: dict[str, Any]) -> dict[str, Any]:
    """A run's hparams: its resolved spec, flat (so a sweep's swept keys are there), and for a sweep's
    member `sweep.id` and `sweep.index`, so the HParams tab can pick out one sweep."""
    out = flat_hparams(manifest["spec"])
    sweep = manifest.get("sweep")
    if isinstance(sweep, dict):
        out.update({"sweep.id": str(sweep.get("id")), "sweep.index": sweep.get("index")})
    return out
