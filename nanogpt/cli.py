"""`nanogpt VERB ...`: one command line for the whole product.

Each verb's work lives in its own module, imported only when that verb runs, so `check`, `show`
and `schema` never import torch. Errors meant for users (a bad spec, a missing file, a corrupt
dataset) print their message and exit with their status; they never show a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from nanogpt.argv import EPILOG, Parser, UsageError, parse_words, split_overrides
from nanogpt.errors import InputError, NanoGPTError, exhaustion
from nanogpt.config.problems import SpecError
from nanogpt.config.load import load_spec
from nanogpt.config.canonical import spec_sha256, to_toml

QUIET_EXIT_DELAY_S = 3.0
"""How long a process that leaves an error to its node's first process waits before it exits."""

EXIT_INTERRUPTED = 130

# ----------------------------------------------------------------------------------- verbs


def cmd_check(args: argparse.Namespace) -> int:
    paths, overrides = split_overrides(args.words, args.specs)
    if not paths:
        raise _usage("check needs at least one SPEC")
    status = 0
    for path in paths:
        try:
            exp, _ = load_spec(path, overrides)
        except SpecError as e:
            print(e.report(), file=sys.stderr)
            status = 2
        else:
            print(f"ok: {path}  spec_sha256 {spec_sha256(exp)}" if args.hash else f"ok: {path}")
            from nanogpt.perf.scaling import fit_warning

            warning = fit_warning(exp, path)
            if warning:
                print(f"warning: {warning}", file=sys.stderr)
            from nanogpt.training.trackers import INSTALL, missing_packages

            for name in missing_packages(exp.logging.trackers):
                print(f"warning: {path}: logging.trackers names {name!r}, whose package is not installed "
                      f"({INSTALL[name]}); a run would go on without it", file=sys.stderr)
    return status


def cmd_show(args: argparse.Namespace) -> int:
    paths, overrides = split_overrides(args.words, args.specs)
    if len(paths) != 1:
        raise _usage("show takes exactly one SPEC")
    exp, _ = load_spec(paths[0], overrides)
    if args.hash:
        sys.stdout.write(f"{spec_sha256(exp)}\n")
        return 0
    from nanogpt.perf.scaling import optimizer_group_lines

    sys.stdout.write(to_toml(exp) + "".join(f"{line}\n" for line in optimizer_group_lines(exp, paths[0])))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from nanogpt.registry import load_entry_points
    from nanogpt.config.jsonschema import experiment_schema

    failures = load_entry_points()
    if failures:  # the schema would silently lack their kinds
        raise InputError("\nerror: ".join(failures))
    text = json.dumps(experiment_schema(), indent=2) + "\n"
    if args.output:
        output = Path(args.output)
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as e:
            why = "it is a directory" if output.is_dir() else (
                f"its folder {str(output.parent)!r} does not exist" if not output.parent.is_dir() else e.strerror or str(e))
            raise InputError(f"schema -o {args.output!r}: cannot write the schema there: {why}") from None
    else:
        sys.stdout.write(text)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from nanogpt.console import survive_closed_console
    from nanogpt.signals import StopSignals

    paths, overrides = split_overrides(args.words, args.specs)
    stop = StopSignals().install()  # from the first moment: a signal never leaves a run `running`
    try:
        with survive_closed_console():
            member = None
            if args.sweep_member is not None:
                if args.resume is not None:
                    raise _usage("--sweep-member starts a sweep's member; a member resumes with --resume RUN_DIR alone")
                from nanogpt.runs.sweeps.record import SweepMembership

                member = SweepMembership.from_json(args.sweep_member)
            # the spec is validated before torch is imported: a bad spec fails in a fraction of a second
            with _reported_once_per_node():
                if args.resume is not None:
                    if paths:
                        raise _usage("run --resume RUN_DIR takes overrides only, not a SPEC")
                    from nanogpt.runs.manifest import load_for_resume

                    resume_dir = Path(args.resume)
                    exp, origin = load_for_resume(resume_dir, overrides, force=args.force)
                else:
                    if len(paths) != 1:
                        raise _usage("run takes exactly one SPEC (or --resume RUN_DIR)")
                    resume_dir = None
                    exp, origin = load_spec(paths[0], overrides, sweep_member=member is not None)
                    if not exp.train.auto_resume:  # with it, an existing run may be the one to continue
                        from nanogpt.runs.manifest import refuse_existing_run_dir

                        refuse_existing_run_dir(exp)
                _check_world_size(exp, origin.path)
            from nanogpt.training.runner import run

            as_member = {} if member is None else {"run_id": member.run_id, "record": {"sweep": member.manifest_record()}}
            return run(exp, origin, resume_dir=resume_dir, force=args.force, stop=stop, **as_member)
    finally:
        stop.restore()


def cmd_prepare(args: argparse.Namespace) -> int:
    from nanogpt.data.prepare import prepare_command

    paths, overrides = split_overrides(args.words, args.specs)
    if len(paths) != 1:
        raise _usage("prepare takes exactly one SPEC")
    exp, _ = load_spec(paths[0], overrides)
    return prepare_command(exp.data, force=args.force, format=args.format)


def cmd_sample(args: argparse.Namespace) -> int:
    from nanogpt.evaluation.sample import sample_command

    return sample_command(args)


def cmd_perplexity(args: argparse.Namespace) -> int:
    from nanogpt.evaluation.perplexity import perplexity_command

    return perplexity_command(args)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from nanogpt.evaluation.multiple_choice import evaluate_command

    return evaluate_command(args)


def cmd_export(args: argparse.Namespace) -> int:
    from nanogpt.models.export import export_command

    return export_command(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from nanogpt.perf.bench import bench_command

    paths, overrides = split_overrides(args.words, args.specs)
    if len(paths) != 1:
        raise _usage("bench takes exactly one SPEC")
    return bench_command(paths[0], overrides, args)


def cmd_diff(args: argparse.Namespace) -> int:
    from nanogpt.runs.diff import diff_command

    return diff_command(args.a, args.b, as_json=args.json, show_all=args.all, results_only=args.results_only)


def cmd_runs(args: argparse.Namespace) -> int:
    from nanogpt.runs.table import runs_command

    return runs_command(args.dir, name=args.name)


def cmd_sync(args: argparse.Namespace) -> int:
    from nanogpt.training.sync import sync_run

    return sync_run(args.run, args.to)


def cmd_sweep(args: argparse.Namespace) -> int:
    from nanogpt.runs.sweeps.command import sweep_command

    paths, overrides = split_overrides(args.words, args.specs)
    return sweep_command(paths, overrides, args)


def cmd_compare(args: argparse.Namespace) -> int:
    from nanogpt.runs.compare import compare_command

    if args.metric is not None or args.at is not None or args.final or args.target is not None:
        from nanogpt.runs.evidence import verdict_command

        if args.csv:
            raise _usage("compare: a verdict (--metric, --at, --final, --target) prints text or --json, not --csv")
        return verdict_command(args.paths, metric=args.metric, at=args.at, final=args.final, target=args.target,
                               allow_unlike=args.allow_unlike, as_json=args.json)
    if args.allow_unlike:
        raise _usage("compare: --allow-unlike goes with a verdict (--final, --at STEP or --target L)")
    return compare_command(args.paths, fmt="json" if args.json else "csv" if args.csv else "table", sort=args.sort,
                           reverse=args.reverse, each_run=args.runs)


def cmd_plot(args: argparse.Namespace) -> int:
    from nanogpt.runs.plot import plot_command

    return plot_command(args.paths, output=args.output, metrics=args.metric, x=args.x)


def cmd_ladder(args: argparse.Namespace) -> int:
    from nanogpt.perf.ladder import ladder_command

    return ladder_command(args)


def cmd_scaling(args: argparse.Namespace) -> int:
    from nanogpt.perf.scaling import scaling_command

    return scaling_command(args.rest)


def _check_world_size(exp, source: str) -> None:
    """train.grad_accum against torchrun's WORLD_SIZE, before any process starts any work."""
    world_size = int(os.environ.get("WORLD_SIZE") or 1)
    if exp.train.grad_accum % world_size:
        raise SpecError.single(
            source, "train.grad_accum",
            f"{exp.train.grad_accum} must be divisible by the number of processes ({world_size}): it counts "
            "micro-batches over all of them, so that the global batch is the same on any number of processes",
        )


@contextlib.contextmanager
def _reported_once_per_node() -> Iterator[None]:
    """Under torchrun, problems found before any work are the same in every process of a node
    (the same files, the same spec): only its first process (LOCAL_RANK 0) prints them."""
    try:
        yield
    except (SpecError, NanoGPTError) as e:
        if os.environ.get("LOCAL_RANK", "0") == "0":
            raise
        # torchrun stops every process once one exits: give the one that reports the time to
        code = getattr(e, "exit_code", 2)
        for signum in (signal.SIGINT, signal.SIGTERM):  # torchrun's SIGTERM ends the wait, quietly too
            signal.signal(signum, lambda *_: os._exit(code))
        time.sleep(QUIET_EXIT_DELAY_S)
        raise _Quiet(code) from None


class _Quiet(NanoGPTError):
    """An error another process of this node has reported already: exit with its status, say nothing."""

    def __init__(self, exit_code: int):
        super().__init__("")
        self.exit_code = exit_code


# ------------------------------------------------------------------------------- the parser


def _usage(message: str) -> UsageError:
    return UsageError(f"usage error: {message}")


class _Parser(Parser):
    verb_parsers: dict[str, argparse.ArgumentParser]


WORD_VERBS = ("run", "check", "show", "prepare", "bench", "sweep", "ladder")
"""The verbs that take a SPEC and overrides (parsed by `parse_words`)."""


def build_parser() -> _Parser:
    p = _Parser(prog="nanogpt", description="Declarative, reproducible GPT training.", epilog=EPILOG)
    verbs = p.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    verbs.required = True
    p.verb_parsers = verbs.choices
    _add_training_verbs(verbs)
    _add_run_reading_verbs(verbs)
    _add_spec_verbs(verbs)
    _add_model_verbs(verbs)
    return p


def _add_training_verbs(verbs: Any) -> None:
    """Run, sweep, bench: the verbs that train."""
    v = verbs.add_parser("run", help="validate, prepare data if missing, train/evaluate", epilog=EPILOG)
    v.add_argument("words", nargs="*", metavar="SPEC [key=value ...]")
    v.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run in place")
    v.add_argument(
        "--force", action="store_true",
        help="resume even though training-relevant fields changed, or start over when no checkpoint is usable",
    )
    v.add_argument(
        "--sweep-member", metavar="JSON",
        help='set by `nanogpt sweep`: start this run as a sweep\'s member ({"id", "index", "values", "run_id"}), recorded in its manifest',
    )
    v.set_defaults(fn=cmd_run)

    v = verbs.add_parser(
        "sweep", help="launch a family of runs: axes key=a,b,c and the spec's [sweep] table",
        description=(
            "An override whose value has commas outside brackets and quotes is an axis (optimizer.lr=1e-3,3e-4; "
            "optimizer.betas=[0.9,0.99] is one value); axes form a grid, the first slowest, crossed with the "
            "random draws of the spec's [sweep] table. Every member is validated before any starts. Members are "
            "ordinary runs; the sweep's record is <out_dir>/<name>/sweeps/<sweep_id>/sweep.json. "
            "Exit 0 when every member completed, 1 when any failed, 2 for bad input, 130 when interrupted."
        ),
        epilog=EPILOG,
    )
    v.add_argument("words", nargs="*", metavar="SPEC [key=value | key=v1,v2,... ...]")
    v.add_argument("-j", "--jobs", type=int, default=1, metavar="N", help="members at once, each a process with its share of the CPU cores (default 1)")
    v.add_argument("--gpus-per-run", type=int, metavar="K", help="give each member K GPUs of its own (CUDA_VISIBLE_DEVICES; torchrun when K > 1)")
    v.add_argument("--list", action="store_true", help="print the members, one a line (index, then key=value words), and stop")
    v.add_argument("--dry-run", action="store_true", help="validate every member and stop")
    v.add_argument("--resume", metavar="SWEEP_DIR", help="continue a sweep: run what is missing, resume interrupted members, leave completed ones")
    v.add_argument("--rerun", action="store_true", help="train a member even when a completed run of its name has its spec")
    v.add_argument("--sweep-id", metavar="ID", help="name the sweep dir (<out_dir>/<name>/sweeps/ID); an existing one is continued")
    v.add_argument("--index", type=int, metavar="I", help="run member I only, into the sweep --sweep-id names (one task of a job array)")
    v.add_argument("--seeds", type=int, metavar="N", help="run every configuration N times, seeds S..S+N-1 (S: the spec's seed): replicates `compare` groups")
    v.set_defaults(fn=cmd_sweep)

    v = verbs.add_parser("bench", help="time training steps: ms/iter, tokens/s, MFU", epilog=EPILOG)
    v.add_argument("words", nargs="*", metavar="SPEC [key=value ...]")
    v.add_argument("--steps", type=int, default=20, help="timed steps (after the warm-up)")
    v.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    v.add_argument("--synthetic", action="store_true", help="random tokens instead of the dataset")
    v.add_argument("--profile", metavar="DIR", help="write a torch.profiler trace here (TensorBoard/Perfetto)")
    v.add_argument("--json", action="store_true", help="print the figures as JSON")
    v.set_defaults(fn=cmd_bench)


def _add_run_reading_verbs(verbs: Any) -> None:
    """Compare, plot, diff, runs: the verbs that read runs."""
    v = verbs.add_parser("compare", help="runs side by side: what differs in their specs, and their results")
    v.add_argument("paths", nargs="+", metavar="RUN_OR_SWEEP_OR_DIR")
    fmt = v.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print a JSON list of objects, one per run")
    fmt.add_argument("--csv", action="store_true", help="print CSV")
    v.add_argument("--sort", default="best_val_loss", metavar="COLUMN", help="sort by this column: a metric or a spec key (default best_val_loss; missing values last)")
    v.add_argument("--reverse", action="store_true", help="sort descending")
    v.add_argument("--runs", action="store_true", help="one row per run even where runs are replicates (by default: one row per configuration, mean ± sd)")
    verdict = v.add_argument_group("verdict: is B better than A (see docs/evidence.md)")
    verdict.add_argument("--metric", metavar="TAG", help="the evaluated metric to compare: loss/val (default; also val/loss) or loss/train")
    when = verdict.add_mutually_exclusive_group()
    when.add_argument("--at", type=int, metavar="STEP", help="compare at this evaluated step (default: the last step every run evaluated)")
    when.add_argument("--final", action="store_true", help="compare each run's last evaluation")
    verdict.add_argument("--target", type=float, metavar="LOSS", help="steps, tokens and seconds to first reach LOSS, and B/A")
    verdict.add_argument("--allow-unlike", action="store_true", help="compare runs evaluated on different data or eval_iters anyway, saying so")
    v.set_defaults(fn=cmd_compare)

    v = verbs.add_parser("plot", help="loss curves of runs overlaid, to a PNG, SVG or PDF file")
    v.add_argument("paths", nargs="+", metavar="RUN_OR_SWEEP_OR_DIR")
    v.add_argument("-o", "--output", default="loss.png", metavar="FILE", help="the file to write; .png, .svg or .pdf (default loss.png)")
    v.add_argument("--metric", action="append", metavar="TAG", help="a curve to draw, by its TensorBoard tag (default: loss/val and loss/train); repeatable")
    v.add_argument("--x", choices=["iter", "tokens", "wall"], default="iter", help="the horizontal axis (default iter)")
    v.set_defaults(fn=cmd_plot)

    v = verbs.add_parser("diff", help="compare two runs, manifests or specs")
    v.add_argument("a", metavar="A")
    v.add_argument("b", metavar="B")
    v.add_argument("--json", action="store_true", help='print a JSON list of {"path", "a", "b"}')
    v.add_argument("--all", action="store_true", help="include values that always differ (ids, times)")
    v.add_argument(
        "--results-only", action="store_true",
        help="leave out the spec fields that cannot change results (marked [no effect on results]): exit 0 means same results",
    )
    v.set_defaults(fn=cmd_diff)

    v = verbs.add_parser("sync", help="replay a run's metrics.jsonl and manifest into W&B or MLflow after the fact")
    v.add_argument("run", metavar="RUN_DIR")
    v.add_argument("--to", required=True, choices=["wandb", "mlflow"], help="the tracker (its settings: the run's [logging] table)")
    v.set_defaults(fn=cmd_sync)

    v = verbs.add_parser("runs", help="table of runs under DIR (default runs/)")
    v.add_argument("dir", nargs="?", default="runs", metavar="DIR")
    v.add_argument("--name", help="only runs whose name contains this")
    v.set_defaults(fn=cmd_runs)


def _add_spec_verbs(verbs: Any) -> None:
    """Check, show, prepare, schema, scaling: the verbs that read specs."""
    v = verbs.add_parser("check", help="validate specs (never imports torch)", epilog=EPILOG)
    v.add_argument("words", nargs="*", metavar="SPEC... [key=value ...]")
    v.add_argument("--hash", action="store_true", help="print each valid spec's spec_sha256 after its ok")
    v.set_defaults(fn=cmd_check)

    v = verbs.add_parser("show", help="print the fully resolved spec as TOML", epilog=EPILOG)
    v.add_argument("words", nargs="*", metavar="SPEC [key=value ...]")
    v.add_argument("--hash", action="store_true", help="print only its spec_sha256 (what a run's manifest records)")
    v.set_defaults(fn=cmd_show)

    v = verbs.add_parser("prepare", help="build the dataset files a spec needs", epilog=EPILOG)
    v.add_argument("words", nargs="*", metavar="SPEC [key=value ...]")
    v.add_argument("--force", action="store_true", help="rebuild even when up to date")
    v.add_argument("--format", choices=("nanogpt", "bin"), default="nanogpt",
                   help="bin: also write the splits as llm.c/modded-nanogpt token shards in <dataset>/bin/")
    v.set_defaults(fn=cmd_prepare)

    v = verbs.add_parser("schema", help="print the JSON Schema of specs")
    v.add_argument("-o", "--output", metavar="FILE", help="write it to FILE")
    v.set_defaults(fn=cmd_schema)

    v = verbs.add_parser("ladder", help="compute-matched rungs of a spec at several sizes; fit L(C) to their losses")
    v.add_argument("words", nargs="*", metavar="SPEC [key=value ...]")
    v.add_argument("--sizes", metavar="KEY=v1,v2,...", help="the model key that grows and its values, e.g. n_layer=2,4,6")
    v.add_argument("--tokens-per-param", type=float, default=20.0, metavar="R", help="tokens each rung trains on, per parameter (default 20)")
    v.add_argument("--fit", nargs="+", metavar="RUN_OR_DIR", help="fit L(C) = E + A*C^-alpha to these runs' final val losses")
    v.add_argument("--baseline", nargs="+", metavar="RUN_OR_DIR", help="with --fit: a second ladder, and the compute multiplier at each rung")
    v.set_defaults(fn=cmd_ladder)

    v = verbs.add_parser("scaling", help="params, FLOPs, Chinchilla loss and compute-optimal sizes", add_help=False)
    v.add_argument("rest", nargs=argparse.REMAINDER)
    v.set_defaults(fn=cmd_scaling)


def _add_model_verbs(verbs: Any) -> None:
    """Sample, perplexity, export: the verbs that load a model."""
    v = verbs.add_parser(
        "sample",
        help="generate text from a run, a checkpoint or gpt2*",
        description=(
            "Generate text as plain text on stdout (what was loaded goes to stderr). The samples are "
            "generated as one batch; the first is streamed as its tokens come, the others follow whole "
            "when the batch is done, each after a line of 15 dashes. The prompt starts each sample."
        ),
    )
    v.add_argument("source", metavar="RUN_DIR", help="a run dir, a checkpoint file, a HF model dir or gpt2, gpt2-medium, ...")
    v.add_argument("--start", default="\n", help='prompt text, or FILE:path to read it from a file (default: "\\n")')
    v.add_argument("--num-samples", type=int, default=3)
    v.add_argument("--max-new-tokens", type=int, default=200)
    v.add_argument("--temperature", type=float, default=0.8)
    v.add_argument("--top-k", type=int, default=200, help="0 disables")
    v.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling; 1 disables")
    v.add_argument("--seed", type=int, default=1337)
    v.add_argument("--checkpoint", choices=["best", "latest"], default="best", help="which checkpoint of a run dir")
    v.add_argument("--stop-at-eot", action="store_true", help="end a sample at the end-of-text token")
    v.add_argument(
        "--tokenizer-meta", metavar="PATH",
        help="a dataset's meta.json (or its folder) whose tokenizer to use instead of the model's own (nanoGPT char checkpoints)",
    )
    v.add_argument("--device", default="auto")
    v.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    v.set_defaults(fn=cmd_sample)

    v = verbs.add_parser(
        "perplexity",
        help="zero-shot perplexity of a model on a text file or a prepared dataset",
        description=(
            "Score every token of TEXT once with sliding windows of --block-size tokens moving by --stride "
            "(each token gets at least block_size - stride + 1 tokens of context, at most block_size); "
            "the text is preceded by an end-of-text token when the tokenizer has one. Prints tokens scored, "
            "mean NLL (nats/token), perplexity and bits per byte on stdout. Deterministic."
        ),
    )
    v.add_argument("model", metavar="MODEL", help="what `sample` takes: a run dir, a checkpoint, a HF model dir or gpt2, ...")
    v.add_argument("text", metavar="TEXT_OR_SPEC", help="a UTF-8 text file, or a spec (.toml) whose prepared dataset to score")
    v.add_argument("--split", choices=["train", "val"], default="val", help="the split of a spec's dataset (default val)")
    v.add_argument("--block-size", type=int, help="tokens of context per window (default: the model's block size)")
    v.add_argument("--stride", type=int, help="tokens each window moves on (default: block size // 2)")
    v.add_argument("--batch-size", type=int, default=4, help="windows per forward (default 4)")
    v.add_argument("--checkpoint", choices=["best", "latest"], default="best", help="which checkpoint of a run dir")
    v.add_argument("--tokenizer-meta", metavar="PATH", help="a dataset's meta.json (or its folder) whose tokenizer to use")
    v.add_argument("--device", default="auto")
    v.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    v.add_argument("--json", action="store_true", help="print the figures as a JSON object")
    v.set_defaults(fn=cmd_perplexity)

    _add_evaluate_verb(verbs)

    v = verbs.add_parser(
        "export",
        help="write a run's model as a Hugging Face model directory",
        description=(
            "Write the model (and its tokenizer) as a directory transformers loads with "
            "AutoModelForCausalLM.from_pretrained: GPT runs as GPT2LMHeadModel, llama runs as LlamaForCausalLM. "
            "Prints the directory on stdout."
        ),
    )
    v.add_argument("source", metavar="RUN_OR_CHECKPOINT", help="what `sample` takes: a run dir, a checkpoint file, ...")
    v.add_argument("--format", default="hf", help="the output format: hf (the only one)")
    v.add_argument("-o", "--output", required=True, metavar="DIR", help="the directory to write (new or empty)")
    v.add_argument("--checkpoint", choices=["best", "latest"], default="best", help="which checkpoint of a run dir")
    v.set_defaults(fn=cmd_export)


def _add_evaluate_verb(verbs: Any) -> None:
    v = verbs.add_parser(
        "evaluate",
        help="multiple-choice accuracy (hellaswag, arc_easy, piqa, winogrande, ...) as lm-evaluation-harness scores it",
        description=(
            "Score each choice of each example by the log-likelihood of its continuation given its context; "
            "print acc (by the sum) and acc_norm (by the sum over the choice's length) per task on stdout. "
            "Under torchrun, each rank scores a share and rank 0 prints."
        ),
    )
    v.add_argument("model", metavar="MODEL", help="what `sample` takes: a run dir, a checkpoint, a HF model dir or gpt2, ...")
    v.add_argument("--tasks", help="comma-separated task names (hellaswag,arc_easy,piqa,winogrande, ...)")
    v.add_argument("--harness", metavar="TASKS", help="run lm-evaluation-harness's tasks instead, on a temporary HF export (pip install 'nanogpt[eval]')")
    v.add_argument("--limit", type=int, help="the first N examples of each task (default: all)")
    v.add_argument("--data", action="append", metavar="[TASK=]PATH", help="a JSONL file of the task's rows in its dataset's fields, instead of the hub")
    v.add_argument("--batch-size", type=int, default=32, help="choices per forward (default 32)")
    v.add_argument("--checkpoint", choices=["best", "latest"], default="best", help="which checkpoint of a run dir")
    v.add_argument("--tokenizer-meta", metavar="PATH", help="a dataset's meta.json (or its folder) whose tokenizer to use")
    v.add_argument("--device", default="auto")
    v.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    v.add_argument("--json", action="store_true", help="print the figures as a JSON object")
    v.set_defaults(fn=cmd_evaluate)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["scaling"]:  # its own parser, --help included
            return cmd_scaling(argparse.Namespace(rest=argv[1:]))
        parser = build_parser()
        if argv[:1] and argv[0] in WORD_VERBS:
            args = parse_words(parser.verb_parsers[argv[0]], argv[1:])
        else:
            args = parser.parse_args(argv)
        return args.fn(args)
    except _Quiet as e:
        return e.exit_code
    except SpecError as e:
        print(e.report(), file=sys.stderr)
        return 2
    except NanoGPTError as e:
        print(f"error: {e}" if not str(e).startswith("usage error") else str(e), file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # `nanogpt show x | head`
        return 0
    except KeyboardInterrupt:  # SIGINT/SIGTERM before a run dir existed (a run records its own)
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED

    except Exception as e:
        message = exhaustion(e)  # a full disk or absurd sizes: the machine's limits, not a bug
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1


def end_at_once_on_signals() -> None:
    """SIGINT and SIGTERM end a command at once with exit 130, after the cleanups registered with
    nanogpt.signals.on_abort (the `run` verb installs its own handling: see nanogpt/signals.py)."""
    from nanogpt.signals import abort

    def handler(signum, frame):
        abort("interrupted")

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def entry(argv: Sequence[str] | None = None) -> None:
    """The process's way in and out of `main` (the console script, `python -m nanogpt`, `-m nanogpt.run`)."""
    end_at_once_on_signals()
    try:
        code = main(argv)
    except KeyboardInterrupt:  # a KeyboardInterrupt a library raised itself
        code = EXIT_INTERRUPTED
    exit_with(code)


def exit_with(code: int) -> None:
    """Exit with `code`; signals arriving now no longer change it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if code == EXIT_INTERRUPTED:
        # CPython exits by SIGINT instead of with our status when a KeyboardInterrupt passed through
        # C code that runs Python source (importing torch does): leave with the status we chose
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
