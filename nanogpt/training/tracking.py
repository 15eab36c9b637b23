"""What a run reports as it goes, all from rank 0: metrics.jsonl, the console, and TensorBoard
(and the other trackers of nanogpt.training.trackers, which get the same scalars).

`MetricsLog` appends one JSON object per logged step and per evaluation to metrics.jsonl (and
cuts off what a killed run logged past its checkpoint); `Console` prints the run's progress
lines; a `Tracker` writes TensorBoard's events. Every other rank gets versions that do nothing.

TensorBoard's event files go into the run directory itself, so `tensorboard --logdir runs` shows each run as
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

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nanogpt.fileio import atomic_open
from nanogpt.runs.manifest import METRICS


class Tracker:
    """Does nothing: what every rank but 0 has. Each tracker (nanogpt.training.trackers) overrides
    what it records."""

    def scalars(self, step: int, values: dict[str, float | None]) -> None:
        pass

    def text(self, tag: str, text: str, step: int = 0) -> None:
        pass

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float | None]) -> None:
        pass

    def flush(self) -> None:
        pass

    def ended(self, status: str) -> None:
        """How the run ended ("completed", "failed", "interrupted"), told before `close`."""

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


# ------------------------------------------------------------------------------ metrics.jsonl


class MetricsLog:
    """metrics.jsonl of a run: one JSON object per line, appended by rank 0 only.

    Each line gets the run's wall clock over all its sessions, `wall_seconds` (what `nanogpt plot
    --x wall` draws against), from `wall_seconds()`."""

    def __init__(self, path: Path, *, enabled: bool, wall_seconds: Callable[[], float] = lambda: 0.0):
        self.path = path
        self.enabled = enabled
        self.wall_seconds = wall_seconds

    def append(self, record: dict[str, Any]) -> None:
        if self.enabled:
            record["wall_seconds"] = round(self.wall_seconds(), 3)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def truncate(self, before_iter: int) -> None:
        """Drop the lines logged at `before_iter` or later: a resumed run logs them again."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["iter"] < before_iter:
                    kept.append(line + "\n")
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill
        with atomic_open(self.path, "w") as f:
            f.writelines(kept)


# ----------------------------------------------------------------------------------- console


class Console:
    """The run's progress lines on stdout, from rank 0 only."""

    def __init__(self, *, enabled: bool):
        self.enabled = enabled

    def say(self, text: str) -> None:
        if self.enabled:
            print(text, flush=True)

    def announce(self, *, name: str, run_path: Path, dataset: str, data: dict[str, Any], model: dict[str, Any],
                 device: str, world_size: int, tokens_per_iter: int, compile: bool) -> None:
        """The lines that open a run: where it writes, its data and model (as the manifest has them), its device."""
        self.say(f"run: {name} -> {run_path}")
        if data:
            self.say(
                f"data: {dataset}: {data['train']['tokens']:,} train / {data['val']['tokens']:,} val tokens "
                f"({data.get('tokenizer')}, vocab {data.get('vocab_size')})"
            )
        if model:
            self.say(f"model: {model['params'] / 1e6:.2f}M parameters, {model['flops_per_token'] / 1e6:.1f} MFLOPs/token")
        self.say(
            f"device: {device}, {world_size} process(es), "
            f"{tokens_per_iter:,} tokens/iter, compile {'on' if compile else 'off'}"
        )


class Reports:
    """A run's measurements, each reported to all three places at once: metrics.jsonl, TensorBoard, the console."""

    def __init__(self, run_path: Path, tracker: Tracker, *, is_main: bool, wall_seconds: Callable[[], float]):
        self.tracker = tracker
        self.console = Console(enabled=is_main)
        self.metrics = MetricsLog(run_path / METRICS, enabled=is_main, wall_seconds=wall_seconds)

    def evaluation(self, it: int, train_loss: float, val_loss: float, train_perplexity: float, val_perplexity: float) -> None:
        self.console.say(f"step {it}: train loss {train_loss:.4f}, val loss {val_loss:.4f}")
        self.tracker.scalars(it, {"loss/train": train_loss, "loss/val": val_loss,
                                  "perplexity/train": train_perplexity, "perplexity/val": val_perplexity})
        self.metrics.append({"iter": it, "kind": "eval", "train_loss": train_loss, "val_loss": val_loss})

    def tasks(self, it: int, figures: dict[str, float]) -> None:
        """The [evaluation] tasks' figures (eval/<task>/<metric>: acc, acc_norm)."""
        self.tracker.scalars(it, figures)
        self.metrics.append({"iter": it, "kind": "tasks", **figures})
        by_task: dict[str, list[str]] = {}
        for tag, value in figures.items():
            _, task, metric = tag.split("/", 2)
            by_task.setdefault(task, []).append(f"{metric} {value:.4f}")
        self.console.say(f"step {it}: " + "; ".join(f"{task} {', '.join(parts)}" for task, parts in by_task.items()))

    def train_window(self, it: int, *, loss: float, lr: float, grad_norm: float | None, tokens_per_sec: float,
                     mfu: float | None, ms_per_iter: float, group_lrs: dict[str, float] | None = None) -> None:
        """The training loss of a logging step, and the speed of the window of steps it ends.

        `group_lrs`: the rate each parameter group got (role -> lr) where the groups have rates of their own (Muon)."""
        lrs = {f"lr/{role}": value for role, value in (group_lrs or {}).items()}
        self.tracker.scalars(it, {"loss/train_step": loss, "lr": lr, **lrs, "grad_norm": grad_norm, "tokens_per_sec": tokens_per_sec, "mfu": mfu})
        line = {"iter": it, "kind": "train", "loss": loss, "lr": lr, "grad_norm": grad_norm,
                "tokens_per_sec": tokens_per_sec, "mfu": mfu, "ms_per_iter": ms_per_iter}
        if group_lrs:
            line["group_lrs"] = dict(group_lrs)
        self.metrics.append(line)
        mfu_text = f", mfu {mfu * 100:.1f}%" if mfu is not None else ""
        self.console.say(f"iter {it}: loss {loss:.4f}, lr {lr:.2e}, {ms_per_iter:.1f} ms/iter, {tokens_per_sec:,.0f} tok/s{mfu_text}")

    def samples(self, it: int, texts: list[str]) -> None:
        self.tracker.text("samples", "\n\n---\n\n".join(markdown_code(t) for t in texts), step=it)


class ThroughputAverage:
    """The manifest's tokens/s and MFU: the run's average over its logged windows, each session's
    first left out (it holds the warm-up, and torch.compile's start); TensorBoard and metrics.jsonl
    have each window's own. The sums live in the run's `metrics`, which checkpoints carry."""

    def __init__(self, utilization: Any):
        self.utilization = utilization
        """tokens/s -> MFU (None when the peak is unknown)."""
        self.windows_this_session = 0

    def add(self, metrics: dict[str, Any], tokens: int, seconds: float, window_tokens_per_sec: float) -> None:
        self.windows_this_session += 1
        if self.windows_this_session > 1:
            metrics["timed_tokens"] = metrics.get("timed_tokens", 0) + tokens
            metrics["timed_seconds"] = metrics.get("timed_seconds", 0.0) + seconds
        timed = metrics.get("timed_seconds", 0.0)
        average = metrics["timed_tokens"] / timed if timed > 0 else window_tokens_per_sec  # a first window only
        metrics.update(tokens_per_sec=average, mfu=self.utilization(average))


def log_spec(tracker: Tracker, spec_toml: str, provenance: dict[str, str], extends: dict[str, Any]) -> None:
    """The resolved spec, where each value came from (the manifest's `provenance`), and what it changes
    of what it extends (its `extends`), as TensorBoard text."""
    tracker.text("spec", markdown_code(spec_toml))
    changed = [f"{path}: {source}" for path, source in provenance.items() if source != "default"]
    tracker.text("spec/provenance", markdown_code("\n".join(changed) or "(every value is a default)"))
    if extends.get("files"):
        lines = [f"extends {', '.join(extends['files'])}; this spec changes:"]
        for c in extends["changes"]:
            before = "(default)" if c["extended"] is None else json.dumps(c["extended"])
            lines.append(f"  {c['path']}: {before} -> {json.dumps(c['value'])}   ({c['source']})")
        tracker.text("spec/vs_extended", markdown_code("\n".join(lines)))


def run_hparams(manifest: dict[str, Any]) -> dict[str, Any]:
    """A run's hparams: its resolved spec, flat (so a sweep's swept keys are there), and for a sweep's
    member `sweep.id` and `sweep.index`, so the HParams tab can pick out one sweep."""
    out = flat_hparams(manifest["spec"])
    sweep = manifest.get("sweep")
    if isinstance(sweep, dict):
        out.update({"sweep.id": str(sweep.get("id")), "sweep.index": sweep.get("index")})
    return out
