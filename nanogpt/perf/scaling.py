"""`nanogpt scaling params|flops|optimal|loss ...`: the seed's scaling-law notebook as a verb.

The figures come from nanogpt/config/sizes.py; this module is only their command line, parsed with
the same words as every other verb (nanogpt/argv.py: a SPEC and overrides anywhere among the flags).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import attrs

from nanogpt.argv import EPILOG, Parser, parse_words, split_overrides
from nanogpt.errors import InputError
from nanogpt.config.sizes import (
    GPT2_VOCAB,
    LlamaConfig,
    chinchilla_flops,
    flops_6nd,
    gpt_mlp_hidden,
    llama_chinchilla_flops,
    llama_params,
    mfu_flops_per_token,
    model_params,
    padded_vocab,
    params,
)
from nanogpt.perf.laws import (
    GRID_WORDS,
    GRIDS,
    Optimum,
    budget_sweep,
    chinchilla_loss,
    compute_optimal,
    compute_optimal_exact,
    optimal_tokens,
)


class _Parser(Parser):
    """A usage error exits 2 (argv.Parser); --help returns its status to `scaling_command` instead of exiting."""

    def exit(self, status: int = 0, message: Optional[str] = None):  # --help
        if message:
            sys.stderr.write(message)
        raise _HelpShown(status)


class _HelpShown(Exception):
    def __init__(self, status: int):
        self.status = status


def _quantity(text: str) -> float:
    """A positive number, with an optional K/M/B/T suffix: 1.92e19, 124M, 300B."""
    scale = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
    s = text.strip()
    factor = 1.0
    if s and s[-1].lower() in scale:
        factor = scale[s[-1].lower()]
        s = s[:-1]
    try:
        value = float(s) * factor
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (e.g. 1.92e19, 124M, 300B)") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _build_parser() -> tuple[_Parser, dict[str, _Parser]]:
    p = _Parser(
        prog="nanogpt scaling",
        description="The seed's scaling-law notebook: parameters, FLOPs, Chinchilla loss and compute-optimal sizes.",
    )
    sub = p.add_subparsers(dest="what", metavar="{params,flops,memory,optimal,loss}", parser_class=_Parser)
    sub.required = True
    subs: dict[str, _Parser] = {}
    for name, help_text in (
        ("params", "parameter counts of a spec's model or of explicit sizes"),
        ("flops", "FLOPs per token and per sequence (Chinchilla Appendix F, 6N, MFU's 6N+12LHQT)"),
    ):
        s = subs[name] = sub.add_parser(name, help=help_text, description=help_text, epilog=EPILOG)
        s.add_argument("words", nargs="*", metavar="SPEC [key=value ...]", help="a spec and its overrides")
        s.add_argument("--n-layer", type=_positive_int, metavar="L")
        s.add_argument("--n-head", type=_positive_int, metavar="H")
        s.add_argument("--n-embd", type=_positive_int, metavar="C")
        s.add_argument("--block-size", type=_positive_int, metavar="T")
        s.add_argument("--vocab-size", type=_positive_int, metavar="V", help=f"default {GPT2_VOCAB} (GPT-2's)")
        s.add_argument("--no-bias", action="store_true", help="no biases in Linear and LayerNorm layers")
        s.add_argument("--untied", action="store_true", help="output head separate from the token embedding")
        s.add_argument("--pad-vocab-multiple", type=_positive_int, default=64, metavar="M",
                       help="pad the vocabulary to a multiple of M when that adds at most 1%% rows (default 64)")
        s.add_argument("--json", action="store_true", help="print the figures as JSON")
    help_text = "bytes per process (params, grads, optimizer, activations) under ddp and fsdp, and what fits"
    s = subs["memory"] = sub.add_parser("memory", help=help_text, description=help_text + (
        ". Activations are one micro-batch's (train.batch_size sequences of block_size), with and without "
        "activation checkpointing; 16-bit compute unless system.dtype = 'float32'."), epilog=EPILOG)
    s.add_argument("words", nargs="*", metavar="SPEC [key=value ...]", help="a spec and its overrides")
    s.add_argument("--world-size", type=_positive_int, default=1, metavar="N", help="processes in the job (default 1)")
    s.add_argument("--device-memory", type=_memory_size, metavar="SIZE", help="memory of one device, e.g. 80GB or 141GiB: say which rows fit")
    s.add_argument("--json", action="store_true", help="print the figures as JSON")
    s = subs["optimal"] = sub.add_parser("optimal", help="compute-optimal model and data size for a FLOPs budget")
    s.add_argument("--compute", type=_quantity, action="append", metavar="C", help="FLOPs budget (repeatable), e.g. 1.92e19")
    s.add_argument("--sweep", action="store_true", help="the notebook's sweep of budgets 1e17..1e26 (4 per decade)")
    s.add_argument("--grid", choices=["sweep", "notebook"], default=None,
                   help="model-size grid: 'notebook' (10M-100B, 16/decade, the single-budget cell) or 'sweep' "
                        "(10M-10T, 32/decade); default: notebook for --compute, sweep for --sweep")
    s.add_argument("--json", action="store_true", help="print the figures as JSON")
    s = subs["loss"] = sub.add_parser("loss", help="Chinchilla's predicted loss L(N, D)")
    s.add_argument("--params", type=_quantity, required=True, metavar="N", help="parameters, e.g. 124M")
    s.add_argument("--tokens", type=_quantity, required=True, metavar="D", help="training tokens, e.g. 300B")
    s.add_argument("--json", action="store_true", help="print the figures as JSON")
    return p, subs


def scaling_command(argv: Sequence[str]) -> int:
    """`nanogpt scaling params|flops|optimal|loss ...`: print tables (or --json). Exit 0; usage errors raise InputError."""
    top, subs = _build_parser()
    argv = list(argv)
    try:
        if argv[:1] and argv[0] in subs:  # a spec and overrides anywhere among the flags
            args = parse_words(subs[argv[0]], argv[1:])
            args.what = argv[0]
        else:
            args = top.parse_args(argv)
    except _HelpShown as shown:
        return shown.status
    parser = subs[args.what]
    if args.what in ("params", "flops"):
        arch, training, source = _arch_from_args(args, parser)
        report = _model_report(arch, training)
        if args.json:
            _print_json({"source": source, **report})
        else:
            print(_model_table(args.what, arch, training, source, report))
    elif args.what == "memory":
        _memory_command(args, parser)
    elif args.what == "optimal":
        if not args.compute and not args.sweep:
            parser.error("optimal needs --compute C or --sweep")
        rows: list[Optimum] = []
        grids: list[str] = []  # the grid each row's N is the best of
        if args.sweep:
            grid = args.grid or "sweep"
            rows += budget_sweep(grid=GRIDS[grid])
            grids += [grid] * (len(rows) - len(grids))
        for c in args.compute or ():
            grid = args.grid or "notebook"
            rows.append(compute_optimal(c, GRIDS[grid]))
            grids.append(grid)
        exact = [compute_optimal_exact(r.compute) for r in rows]
        if args.json:
            _print_json(
                [
                    {"compute": r.compute, "n_params": r.n_params, "tokens": r.tokens, "loss": r.loss, "grid": g,
                     "exact": asdict(e)}
                    for r, g, e in zip(rows, grids, exact)
                ]
            )
        else:
            print(_optimal_table(rows, exact, grids))
    else:
        n, d = args.params, args.tokens
        loss = chinchilla_loss(n, d)
        d_opt = optimal_tokens(n)
        report = {
            "n_params": n,
            "tokens": d,
            "loss": loss,
            "compute_6nd": flops_6nd(n, d),
            "optimal_tokens": d_opt,
            "training_factor": d / d_opt,
            "optimal_at_same_compute": asdict(compute_optimal_exact(flops_6nd(n, d))),
        }
        if args.json:
            _print_json(report)
        else:
            opt = report["optimal_at_same_compute"]
            rows = [
                ("parameters N", _si(n)),
                ("tokens D", _si(d)),
                ("predicted loss L(N, D)", f"{loss:.4f}  (E + A/N^alpha + B/D^beta, Chinchilla's fit)"),
                ("compute 6ND", f"{report['compute_6nd']:.3e} FLOPs"),
                ("compute-optimal D for N", f"{_si(d_opt)} tokens ({d_opt / n:.1f} per parameter)"),
                ("vs compute-optimal", _verdict(d / d_opt)),
                ("optimum at this compute", f"N = {_si(opt['n_params'])}, D = {_si(opt['tokens'])}, loss {opt['loss']:.4f}"),
            ]
            print(_table(rows))
    return 0


def optimizer_group_lines(exp: Any, path: str) -> list[str]:
    """What `show` adds under a spec whose optimizer splits the model into groups (Muon): each group's
    parameter count, as the run's manifest will record it, in TOML comments; [] for other optimizers."""
    from nanogpt.config.sizes import gpt_role_params, llama_intermediate_size, llama_role_params
    from nanogpt.config.tables import GPTSpec, LlamaSpec, MuonSpec

    if not isinstance(exp.optimizer, MuonSpec):
        return []
    model = exp.model
    if not isinstance(model, (GPTSpec, LlamaSpec)):
        return ["", f"# optimizer groups: a model.kind {model.kind!r} says its own (param_roles); the run's manifest records their sizes"]
    vocab, note = model.vocab_size, "model.vocab_size"
    if vocab is None:
        try:
            vocab, note = _dataset_vocab(exp.data, path)
        except InputError:
            vocab, note = None, "unknown until the dataset is prepared"
    if isinstance(model, GPTSpec):
        counts = gpt_role_params(**attrs.asdict(model), padded_vocab_size=vocab and padded_vocab(vocab, model.pad_vocab_multiple))
    else:
        counts = llama_role_params(**{**attrs.asdict(model), "vocab_size": vocab, "n_kv_head": model.n_kv_head or model.n_head,
                                      "intermediate_size": model.intermediate_size or llama_intermediate_size(model.n_embd)})
    shown = [f"{role} {n:,}" if n is not None else f"{role} (needs the vocabulary)" for role, n in counts.items() if n != 0]
    return ["", f"# optimizer groups (parameters): {', '.join(shown)}", f"# vocabulary: {vocab or '?'} ({note})"]


def fit_warning(exp: Any, path: str) -> str | None:
    """What `check` says when the spec as written (its system.parallel and activation checkpointing;
    fsdp over as many processes as this machine has GPUs) will not fit the smallest GPU nvidia-smi
    finds; None when it fits, when there is no GPU, or the spec's model kind has no sizes here."""
    from nanogpt.perf import memory

    if exp.system.device != "auto" and not exp.system.device.startswith("cuda"):
        return None
    gpus = memory.local_gpus()
    if not gpus:
        return None
    try:
        arch = _arch_of(exp, path)
    except InputError:  # a plugin kind, or a vocabulary that is not known before prepare: nothing to say
        return None
    parallel = exp.system.parallel
    world = len(gpus) if parallel == "fsdp" else 1
    usage = memory.plan(
        _memory_sizes(arch, exp.model.dropout), batch=exp.train.batch_size, world_size=world,
        half=exp.system.dtype != "float32", checkpointing=exp.system.activation_checkpointing == "blocks",
        micro_steps=max(exp.train.grad_accum // world, 1),
    )[parallel]
    name, capacity = min(gpus, key=lambda g: g[1])
    if usage.total <= capacity:
        return None
    how = f"under {parallel}" + (f" over this machine's {world} GPUs" if parallel == "fsdp" else "")
    return (
        f"{path}: needs about {memory.human(usage.total)} per process {how} (activations of train.batch_size = "
        f"{exp.train.batch_size}: {memory.human(usage.activations)}), more than the {memory.human(capacity)} of "
        f"this machine's {name}; `nanogpt scaling memory {path}` shows what a smaller batch, fsdp or "
        "activation checkpointing would need"
    )


def _memory_size(text: str) -> int:
    from nanogpt.perf.memory import parse_size

    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _memory_command(args: argparse.Namespace, parser: _Parser) -> None:
    import attrs

    from nanogpt.perf import memory

    exp, path = _load_one_spec(args.words, [], parser)
    arch = _arch_of(exp, path)
    sizes = _memory_sizes(arch, exp.model.dropout)
    half = exp.system.dtype != "float32"
    batch = exp.train.batch_size
    rows = []
    for checkpointing in (False, True):
        plans = memory.plan(sizes, batch=batch, world_size=args.world_size, half=half, checkpointing=checkpointing,
                            micro_steps=max(exp.train.grad_accum // args.world_size, 1))
        rows += [(u, checkpointing) for u in plans.values()]
    fits = args.device_memory
    if args.json:
        _print_json({
            "source": path, "world_size": args.world_size, "micro_batch": batch, "block_size": arch.block_size,
            "vocab_size": arch.padded_vocab_size, "precision": "16-bit" if half else "float32", "device_memory": fits,
            "rows": [
                {**u.as_dict(), "activation_checkpointing": "blocks" if ck else "none",
                 **({} if fits is None else {"fits": u.total <= fits})}
                for u, ck in rows
            ],
        })
        return
    processes = f"{args.world_size} process" + ("es" if args.world_size > 1 else "")
    print(f"{path}: {arch.n_layer} x {arch.n_embd}, block {arch.block_size}, vocab {arch.padded_vocab_size}; micro-batch "
          f"{batch} x {arch.block_size} tokens; {'16-bit' if half else 'float32'} compute; AdamW; {processes}")
    named = [attrs.evolve(u, parallel=u.parallel + (" + ckpt" if ck else "")) for u, ck in rows]
    print("\n".join(memory.table(named, fits)))
    print("bytes per process (under fsdp rank 0's, the largest shard); ckpt: system.activation_checkpointing = "
          "\"blocks\", each block recomputed in the backward")


def _memory_sizes(arch: Arch | LlamaArch, dropout: float) -> Any:
    """The planner's sizes of the model `arch` describes."""
    from nanogpt.perf import memory

    if isinstance(arch, LlamaArch):
        return memory.LlamaSizes(**{**arch.shape(), "dropout": dropout})
    return memory.GPTSizes(
        n_layer=arch.n_layer, n_head=arch.n_head, n_embd=arch.n_embd, block_size=arch.block_size,
        vocab_size=arch.padded_vocab_size, bias=arch.bias, tie_weights=arch.tie_weights, dropout=dropout,
        **dict(arch.options),  # the architecture options the spec sets; the planner counts each one
    )


def _non_embedding_note(arch: Arch) -> str:
    tables = [] if arch.option("position", "learned") == "rope" else ["position table"]
    tables += [] if arch.tie_weights else ["token table"]
    rope = " (RoPE has no position table)" if arch.option("position", "learned") == "rope" else ""
    return (f"the model minus its {' and '.join(tables)}" if tables else "every tensor of the model") + rope


def _arch_from_args(args: argparse.Namespace, parser: _Parser) -> tuple[Arch | LlamaArch, Optional[Training], str]:
    explicit = {k: getattr(args, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")}
    if args.words or args.specs:
        given = [f"--{k.replace('_', '-')}" for k, v in explicit.items() if v is not None]
        if given:
            parser.error(f"give a SPEC or sizes ({', '.join(given)}), not both; override a spec with model.KEY=VALUE")
        return _arch_from_spec(args.words, args.specs, parser)
    missing = [f"--{k.replace('_', '-')}" for k, v in explicit.items() if v is None and k != "vocab_size"]
    if missing:
        parser.error(f"give a SPEC, or the sizes (missing {', '.join(missing)})")
    if args.n_embd % args.n_head:
        parser.error(f"--n-embd ({args.n_embd}) must be divisible by --n-head ({args.n_head})")
    vocab, note = args.vocab_size, ""
    if vocab is None:
        vocab, note = GPT2_VOCAB, "GPT-2's, as no --vocab-size was given"
    arch = Arch(
        n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, block_size=args.block_size,
        vocab_size=vocab, bias=not args.no_bias, tie_weights=not args.untied,
        pad_vocab_multiple=args.pad_vocab_multiple, vocab_note=note,
    )
    return arch, None, "sizes"


def _arch_from_spec(words: list[str], specs: list[str], parser: _Parser) -> tuple[Arch | LlamaArch, Training, str]:
    exp, path = _load_one_spec(words, specs, parser)
    arch = _arch_of(exp, path)
    training = Training(exp.tokens_per_iter, exp.train.max_iters, exp.train.eval_only, exp.model.init_from)
    return arch, training, path


def _load_one_spec(words: list[str], specs: list[str], parser: _Parser) -> tuple[Any, str]:
    from nanogpt.config.load import load_spec

    paths, overrides = split_overrides(words, specs)
    if len(paths) != 1:
        parser.error(f"takes one SPEC (got {len(paths)}: {' '.join(paths) or 'none'})")
    exp, _ = load_spec(paths[0], overrides)  # SpecError propagates: the CLI prints it, exit 2
    return exp, paths[0]


def _arch_of(exp: Any, path: str) -> Arch | LlamaArch:
    from nanogpt.config.tables import GPTSpec, LlamaSpec

    model = exp.model
    if not isinstance(model, (GPTSpec, LlamaSpec)):
        raise InputError(f"{path}: model.kind {model.kind!r} has no sizes here; scaling knows the 'gpt' and 'llama' models")
    vocab, note = model.vocab_size, ""
    if vocab is None:
        vocab, note = _dataset_vocab(exp.data, path)
    if isinstance(model, LlamaSpec):
        return LlamaArch.from_spec(model, vocab, vocab_note=note)
    defaults = GPTSpec()
    options = tuple((name, getattr(model, name)) for name in GPT_OPTIONS if getattr(model, name) != getattr(defaults, name))
    return Arch(
        n_layer=model.n_layer, n_head=model.n_head, n_embd=model.n_embd, block_size=model.block_size,
        vocab_size=vocab, bias=model.bias, tie_weights=model.tie_weights,
        pad_vocab_multiple=model.pad_vocab_multiple, vocab_note=note, options=options,
    )


GPT_OPTIONS = ("position", "rope_theta", "norm", "qk_norm", "mlp", "logit_softcap", "zero_init_residual")
"""The GPT kind's speedrun options (nanogpt/models/gpt.py), as `[model]` names them."""


def _dataset_vocab(data: Any, spec_path: str) -> tuple[int, str]:
    """The vocabulary of a spec whose model leaves it to the dataset: meta.json, else GPT-2's for BPE."""
    from nanogpt.data.files import META, prepared_vocab_size
    from nanogpt.errors import DataError

    data_dir, dataset = getattr(data, "data_dir", None), getattr(data, "dataset", None)
    try:
        vocab = prepared_vocab_size(data)
    except DataError as e:
        raise InputError(str(e)) from None
    if vocab is not None:
        return vocab, f"from {Path(str(data_dir), str(dataset), META)}"
    if getattr(data, "tokenizer", None) == "gpt2":
        return GPT2_VOCAB, "GPT-2's BPE; the dataset is not prepared yet"
    raise InputError(
        f"{spec_path}: the vocabulary comes from the dataset, which is not prepared yet "
        f"(no {Path(str(data_dir), str(dataset), 'meta.json')}); run `nanogpt prepare {spec_path}` "
        "or give model.vocab_size=N"
    )


def _model_report(arch: Arch | LlamaArch, training: Optional[Training]) -> dict[str, Any]:
    """Every figure `params` and `flops` print, as plain data."""
    real = arch.sizes()
    if isinstance(arch, LlamaArch):
        # no position table and no padding: N is every parameter but the token table, as the model counts it
        n = n_model = llama_params(**real)
        total = n + (0 if arch.tie_embeddings else arch.vocab_size * arch.n_embd)
        per_seq = per_seq_full_mlp = llama_chinchilla_flops(**real)  # at the real widths already
        switches = {"tie_embeddings": arch.tie_embeddings}
    else:
        padded = arch.sizes(arch.padded_vocab_size)
        options = dict(arch.options)
        mlp = options.get("mlp", "gelu")
        n = params(**real, bias=arch.bias, **options)
        n_model = params(**padded, bias=arch.bias, **options)
        total = model_params(**padded, bias=arch.bias, tie_weights=arch.tie_weights, **options)
        matrices = 3 if mlp == "swiglu" else 2  # SwiGLU's MLP has a third matrix (c_gate)
        if mlp == "swiglu":  # its width is not 4·d: there is no notebook figure to keep, only the real one
            per_seq = chinchilla_flops(**real, ffw_size=gpt_mlp_hidden(arch.n_embd, mlp), mlp_matrices=matrices)
        else:
            per_seq = chinchilla_flops(**real)
        per_seq_full_mlp = chinchilla_flops(**real, ffw_size=gpt_mlp_hidden(arch.n_embd, mlp), mlp_matrices=matrices)
        switches = {"bias": arch.bias, "tie_weights": arch.tie_weights, **options}
    mfu_per_token = mfu_flops_per_token(
        n_params=n_model, n_layer=arch.n_layer, n_head=arch.n_head, n_embd=arch.n_embd, block_size=arch.block_size
    )
    report: dict[str, Any] = {
        "arch": {**real, **switches, "padded_vocab_size": arch.padded_vocab_size},
        "vocab_note": arch.vocab_note,
        "params": n,
        "params_model_non_embedding": n_model,
        "params_model_total": total,
        "flops_per_sequence_chinchilla": per_seq,
        "flops_per_token_chinchilla": per_seq / arch.block_size,
        "flops_per_sequence_chinchilla_full_mlp": per_seq_full_mlp,
        "flops_per_token_6n": 6 * n,
        "flops_per_token_mfu": mfu_per_token,
    }
    if training is not None:
        d = training.tokens
        report["training"] = {
            "tokens_per_iter": training.tokens_per_iter,
            "max_iters": training.max_iters,
            "eval_only": training.eval_only,
            "init_from": training.init_from,
            "tokens": d,
        }
        if d > 0:
            d_opt = optimal_tokens(n)
            compute = flops_6nd(n, d)
            report["training"].update(
                compute_6nd=compute,
                compute_chinchilla=per_seq * d / arch.block_size,
                predicted_loss=chinchilla_loss(n, d),
                optimal_tokens=d_opt,
                training_factor=d / d_opt,
                optimal_at_same_compute=asdict(compute_optimal_exact(compute)),
            )
    return report


def _model_table(what: str, arch: Arch | LlamaArch, training: Optional[Training], source: str, r: dict[str, Any]) -> str:
    llama = isinstance(arch, LlamaArch)
    vocab = f"{arch.vocab_size}"
    if arch.padded_vocab_size != arch.vocab_size:
        vocab += f" (padded to {arch.padded_vocab_size} in the model)"
    if arch.vocab_note:
        vocab += f"  [{arch.vocab_note}]"
    if llama:
        model = (f"llama n_layer={arch.n_layer} n_head={arch.n_head} n_kv_head={arch.n_kv_head} n_embd={arch.n_embd} "
                 f"intermediate_size={arch.intermediate_size} block_size={arch.block_size}"
                 f"{' tie_embeddings=true' if arch.tie_embeddings else ''}")
    else:
        model = (f"n_layer={arch.n_layer} n_head={arch.n_head} n_embd={arch.n_embd} block_size={arch.block_size}"
                 f"{'' if arch.bias else ' bias=false'}{'' if arch.tie_weights else ' tie_weights=false'}"
                 + "".join(f" {name}={json.dumps(value)}" for name, value in arch.options))
    rows: list[tuple[str, str]] = [("model", model), ("vocab_size", vocab)]
    if what == "params" and llama:
        rows += [
            ("params (N)", f"{_count(r['params'])}  all but the token embedding (RoPE has no position table)"),
            ("params in the model", f"{_count(r['params_model_total'])}  every tensor once"),
            ("non-embedding (MFU)", f"{_count(r['params_model_non_embedding'])}  the same N"),
        ]
    elif what == "params":
        rows += [
            ("params (N)", f"{_count(r['params'])}  all but the token and position embeddings (the notebook's, Chinchilla's N)"),
            ("params in the model", f"{_count(r['params_model_total'])}  every tensor once, padded vocab"),
            ("non-embedding (MFU)", f"{_count(r['params_model_non_embedding'])}  " + _non_embedding_note(arch)),
        ]
    else:
        if llama:
            rows.append(("FLOPs / sequence", f"{r['flops_per_sequence_chinchilla'] / 1e9:,.6f} G  Chinchilla App. F at the "
                                             f"model's real widths (forward+backward, {arch.block_size} tokens)"))
        else:
            rows += [
                ("FLOPs / sequence", f"{r['flops_per_sequence_chinchilla'] / 1e9:,.6f} G  Chinchilla App. F as the notebook "
                                     f"counts it (forward+backward, {arch.block_size} tokens)"),
                ("", f"{r['flops_per_sequence_chinchilla_full_mlp'] / 1e9:,.6f} G  the same with the MLP at its real width "
                     "(the notebook passes ffw_size=4)"),
            ]
        rows += [
            ("FLOPs / token", f"{_si(r['flops_per_token_chinchilla'])}  Chinchilla App. F{'' if llama else ' (notebook)'}"),
            ("", f"{_si(r['flops_per_token_6n'])}  6N"),
            ("", f"{_si(r['flops_per_token_mfu'])}  6N + 12*L*H*Q*T (nanoGPT/PaLM, used for MFU)"),
        ]
    t = r.get("training")
    if t is not None:
        rows.append(("tokens per iter", f"{t['tokens_per_iter']:,}  (batch_size * grad_accum * block_size)"))
        if t["eval_only"] or not t["tokens"]:
            rows.append(("training", "none: the spec evaluates only"))
        else:
            opt = t["optimal_at_same_compute"]
            rows += [
                ("training tokens D", f"{_si(t['tokens'])}  ({t['max_iters']:,} iters)"),
                ("compute 6ND", f"{t['compute_6nd']:.3e} FLOPs  (Chinchilla App. F: {t['compute_chinchilla']:.3e})"),
                ("predicted loss", f"{t['predicted_loss']:.4f}  L(N, D), Chinchilla's fit"),
                ("compute-optimal D", f"{_si(t['optimal_tokens'])} tokens for N ({t['optimal_tokens'] / r['params']:.1f} per parameter)"),
                ("vs compute-optimal", _verdict(t["training_factor"])),
                ("optimum at this compute", f"N = {_si(opt['n_params'])}, D = {_si(opt['tokens'])}, loss {opt['loss']:.4f}"),
            ]
            if t["init_from"] != "scratch":
                rows.append(("note", f"the weights start from {t['init_from']}; the fit describes training from scratch"))
    return f"{source}\n{_table(rows)}"


def _optimal_table(rows: list[Optimum], exact: list[Optimum], grids: list[str]) -> str:
    head = ("compute (FLOPs)", "params N", "tokens D", "loss", "tokens/param", "exact N", "exact D")
    body = [
        (f"{r.compute:e}", f"{r.n_params / 1e6:.2f}M", f"{r.tokens / 1e9:.2f}B", f"{r.loss:.4f}",
         f"{r.tokens / r.n_params:.1f}", f"{e.n_params / 1e6:.2f}M", f"{e.tokens / 1e9:.2f}B")
        for r, e in zip(rows, exact)
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in (head, *body)]
    used = sorted(set(grids))
    if len(used) == 1:
        other = "sweep" if used[0] == "notebook" else "notebook"
        where = f"on {GRID_WORDS[used[0]]}; --grid {other} picks the other grid, whose N for a budget may differ"
    else:
        where = f"on {GRID_WORDS['sweep']} for the --sweep rows, {GRID_WORDS['notebook']} for --compute (--grid picks one for all)"
    notes = [
        f"params N: the size with the lowest L(N, D), D = C / 6N, {where}",
        "exact: the continuous optimum of the same fit, which neither grid rounds",
    ]
    return "\n".join([*lines, *notes])


def _verdict(factor: float) -> str:
    if 0.9 <= factor <= 1.1:
        return f"about compute-optimal ({factor:.2f}x the optimal tokens for its size)"
    if factor > 1:
        return f"over-trained: {factor:.2f}x the compute-optimal tokens for its size"
    return f"under-trained: {factor:.3g}x the compute-optimal tokens for its size ({1 / factor:.2f}x too few)"


def _table(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def _count(n: int) -> str:
    return f"{n:,} ({n / 1e6:.6g}M)"


def _si(x: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{suffix}"
    return f"{x:.3g}"


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


@dataclass(frozen=True)
class Arch:
    """The sizes the calculators take, and where they came from."""

    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    vocab_size: int
    bias: bool = True
    tie_weights: bool = True
    pad_vocab_multiple: int = 1
    vocab_note: str = ""
    options: tuple[tuple[str, Any], ...] = ()
    """The GPT kind's architecture options the spec sets away from GPT-2's (name, value), e.g. (("mlp", "swiglu"),)."""

    def option(self, name: str, default: Any) -> Any:
        return dict(self.options).get(name, default)

    def sizes(self, vocab_size: Optional[int] = None) -> dict[str, int]:
        return dict(
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
            block_size=self.block_size,
            vocab_size=self.vocab_size if vocab_size is None else vocab_size,
        )

    @property
    def padded_vocab_size(self) -> int:
        return padded_vocab(self.vocab_size, self.pad_vocab_multiple)


@attrs.frozen(kw_only=True)
class LlamaArch(LlamaConfig):
    """A Llama's sizes for the calculators (`[model] kind = "llama"`): the model's own description, and
    where its vocabulary came from."""

    vocab_note: str = ""


@dataclass(frozen=True)
class Training:
    """What a spec's training run consumes."""

    tokens_per_iter: int
    max_iters: int
    eval_only: bool
    init_from: str = "scratch"

    @property
    def tokens(self) -> int:
        return 0 if self.eval_only else self.tokens_per_iter * self.max_iters
