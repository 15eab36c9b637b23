"""nanogpt: declarative, reproducible GPT training. One TOML file states an experiment.

The package is cut by concern, one folder each; a module imports only from its own layer or the
layers below it, never from one above (tests/test_layout.py holds this, and that no two modules
import each other). Top first:

    entry points  cli.py, run.py, __main__.py   the verbs' command line: parse, dispatch, exit codes
    verbs         evaluation/  perf/           sample, perplexity; bench, scaling, memory planning
    training      training/                    runner, loop, step, optimizers, schedules, ddp/fsdp
    runs          runs/                        the run directory: manifest, lock, diff, runs, compare, plot, sweeps
    models        models/                      GPT, Llama, generation, weights in and out, export
    data          data/                        sources, tokenizers, prepare, prepared datasets, batches
    checkpoints   checkpoints/                 the checkpoint record, `.pt` files, DCP directories, a run's catalog
    spec half     config/  registry.py         torch-free: specs loaded, checked, hashed; kinds by name
    foundation    errors.py fileio.py contracts.py signals.py console.py argv.py

nanogpt/spec/ and nanogpt/weights.py are the two import paths plugins written before this layout
use (the registry's documented example of that time); they forward to config/ and models/.

A newcomer told "add an optimizer" opens training/optimizers.py (its spec class in
config/tables.py, its name in registry.py); "change the checkpoint format" opens checkpoints/;
"add a model family" opens models/ (or writes a plugin: registry.py's docstring is the example).

May import: nothing; importing nanogpt loads no other module (this map and the version only).
"""

__version__ = "0.1.0"

LAYERS = (
    ("entry points", ("nanogpt.cli", "nanogpt.run", "nanogpt.__main__")),
    ("verbs", ("nanogpt.evaluation", "nanogpt.perf")),
    ("training", ("nanogpt.training",)),
    ("runs", ("nanogpt.runs",)),
    ("models", ("nanogpt.models", "nanogpt.weights")),
    ("data", ("nanogpt.data",)),
    ("checkpoints", ("nanogpt.checkpoints",)),
    ("spec half", ("nanogpt.config", "nanogpt.registry", "nanogpt.spec")),
    ("foundation", (
        "nanogpt", "nanogpt.errors", "nanogpt.fileio", "nanogpt.contracts", "nanogpt.signals", "nanogpt.console",
        "nanogpt.argv",
    )),
)
"""The layers of the docstring above as data, top first: (name, the modules and packages in it)."""
