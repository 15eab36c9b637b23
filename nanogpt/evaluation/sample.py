"""`nanogpt sample SOURCE`: text on stdout from any model a user names.

The model and its tokenizer come from nanogpt.models.loading, the text from
nanogpt.models.generation (the path a run's logged samples take too). The samples of a call are
one batch; the first is streamed as its tokens come, the others printed whole when the batch is
done, each after a line of 15 dashes. Streaming or not, the bytes on stdout are the same, and
stdout holds nothing but the samples (what was loaded is said on stderr)."""

from __future__ import annotations
import math
import sys
from typing import Any
from nanogpt.errors import InputError, NanoGPTError
from nanogpt.fileio import read_user_text
from nanogpt.models.generation import generate_texts, start_ids
from nanogpt.models.loading import load_model
from nanogpt.training.dist import pick_device_and_autocast


SEPARATOR = "-" * 15
"""The line between two samples on stdout (the seed's)."""


FILE_PREFIX = "FILE:"


def read_start(start: str) -> str:
    """The prompt `--start` gives: the text itself, or the contents of the file after `FILE:`
    (or `file:`, as data.source spells it)."""
    if not start[: len(FILE_PREFIX)].upper() == FILE_PREFIX:
        return start
    name = start[len(FILE_PREFIX):]
    if not name:
        raise InputError(f"--start {start!r} needs a path after '{start[:len(FILE_PREFIX)]}'")
    return read_user_text(name, f"--start {start!r}")


def check_sampling_flags(args: Any) -> None:
    """Reject flags out of range before anything is loaded, naming the flag (exit status 2)."""
    if args.num_samples < 1:
        raise InputError(f"--num-samples must be at least 1 (got {args.num_samples})")
    if args.max_new_tokens < 0:
        raise InputError(f"--max-new-tokens must be at least 0 (got {args.max_new_tokens})")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise InputError(f"--temperature must be 0 (greedy) or above (got {args.temperature})")
    if args.top_k < 0:
        raise InputError(f"--top-k must be at least 1, or 0 to disable it (got {args.top_k})")
    if not (0.0 < args.top_p <= 1.0):
        raise InputError(f"--top-p must be in (0, 1], 1 disabling it (got {args.top_p})")
    if not 0 <= args.seed < 2**64:
        raise InputError(f"--seed must be in 0 .. 2**64-1 (got {args.seed})")


def say(text: str) -> None:
    """A line for the user on stderr (stdout is for the samples only)."""
    print(text, file=sys.stderr, flush=True)


def sample_command(args: Any) -> int:
    """`nanogpt sample SOURCE [...]`: print samples on stdout; returns the exit status."""
    check_sampling_flags(args)
    start = read_start(args.start)
    device, autocast = pick_device_and_autocast(args.device, args.dtype)
    loaded = load_model(args.source, which=args.checkpoint, tokenizer_meta=getattr(args, "tokenizer_meta", None))
    start_ids(loaded.tokenizer, start)  # a prompt the vocabulary cannot spell fails before anything is printed
    model = loaded.model.to(device)
    say(
        f"sampling from {loaded.description}: {model.num_params() / 1e6:.2f}M parameters, "
        f"{loaded.tokenizer.name} tokenizer, on {device}"
    )

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    prompt_text = start if start else ""
    write(prompt_text)
    try:
        texts = generate_texts(
            model, loaded.tokenizer, start=start, num_samples=args.num_samples, max_new_tokens=args.max_new_tokens,
            seed=args.seed, device=device, temperature=args.temperature, top_k=args.top_k or None,
            top_p=args.top_p if args.top_p < 1.0 else None, stop_at_eot=args.stop_at_eot, autocast=autocast,
            on_text=write,
        )
    except RuntimeError as e:
        if "probability tensor contains" not in str(e):
            raise
        # finite weights whose logits overflow (float16): multinomial refuses NaN probabilities
        raise NanoGPTError(
            f"{loaded.description}: its output became NaN or inf while sampling at {args.dtype} precision; "
            "try --dtype float32"
        ) from None
    write("\n")
    for text in texts[1:]:
        write(f"{SEPARATOR}\n{prompt_text}{text}\n")
    return 0
