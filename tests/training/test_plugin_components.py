"""A model and a dataset from plugins, each named by `plugins`, go everywhere a built-in one goes: they
train, checkpoint, resume exactly, evaluate and sample. The model is the registry docstring's own example."""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path

import pytest

from nanogpt import registry
from tests.tinyrun import PLUGINS, final_weights, losses, nanogpt, only_run_dir, same_weights, tiny_spec

pytestmark = pytest.mark.slow

HALF, FULL = 10, 20


def docstring_example() -> str:
    doc = inspect.getdoc(registry)
    block = doc.split("::\n\n", 1)[1].split("\n\nA `[model] kind", 1)[0]
    return textwrap.dedent(block)


def test_the_registry_docstring_example_is_the_plugin_model():
    """The registry's docstring shows tests/plugins/mlp_model.py exactly, so the example the test below runs is the one users read."""
    assert docstring_example().strip() == (PLUGINS / "mlp_model.py").read_text(encoding="utf-8").strip()


def split_and_straight(spec: Path) -> tuple[Path, Path]:
    """The spec run to HALF then resumed to FULL, and run straight to FULL."""
    nanogpt("run", str(spec), f"train.max_iters={HALF}", check=True)
    split = only_run_dir(spec.parent / "runs", spec.stem)
    nanogpt("run", "--resume", str(split), f"train.max_iters={FULL}", check=True)
    nanogpt("run", str(spec), f"train.max_iters={FULL}", "logging.run_id=straight", check=True)
    return split, spec.parent / "runs" / spec.stem / "straight"


def check_end_to_end(spec: Path, text_file: Path) -> Path:
    split, straight = split_and_straight(spec)
    assert losses(split) == losses(straight)  # exact resume
    assert same_weights(final_weights(split), final_weights(straight))
    evals = [entry for entry in losses(straight) if entry[1] == "eval"]
    assert [entry[0] for entry in evals] == [0, 10, 20] and evals[-1][3] < evals[0][3]  # evaluated, and it learned
    sampled = nanogpt("sample", str(straight), "--start", "the", "--num-samples", "1", "--max-new-tokens", "24", "--seed", "1", check=True)
    assert sampled.stdout.startswith("the") and len(sampled.stdout) >= 3 + 24  # the start, and 24 new characters
    scored = nanogpt("perplexity", str(straight), str(text_file), check=True)
    assert "perplexity" in scored.stdout
    return straight


def test_a_plugin_written_before_the_layout_move_still_trains_and_samples(tmp_path):
    """The registry's example as plugin authors copied it before the layout move (importing
    nanogpt.spec.tables and nanogpt.weights) still registers, trains, resumes and samples."""
    spec = tiny_spec(tmp_path, name="old_mlp", extra='plugins = ["mlp_model_before_the_move"]',
                     model={"kind": "mlp", "width": 32, "block_size": 16}, train={"max_iters": 6, "eval_interval": 3})
    nanogpt("run", str(spec), "train.max_iters=3", check=True)
    run = only_run_dir(spec.parent / "runs", "old_mlp")
    nanogpt("run", "--resume", str(run), "train.max_iters=6", check=True)
    assert [entry[0] for entry in losses(run) if entry[1] == "eval"] == [0, 3, 6]
    sampled = nanogpt("sample", str(run), "--start", "the", "--num-samples", "1", "--max-new-tokens", "8", check=True)
    assert sampled.stdout.startswith("the")


def test_the_old_import_paths_are_the_new_objects():
    """nanogpt.spec.tables and nanogpt.weights hand out the very classes and functions of their new
    homes (a plugin's ModelSpec subclass must be the registry's), warning that they moved."""
    import nanogpt.spec.tables as old_tables
    import nanogpt.weights as old_weights
    from nanogpt.config import tables
    from nanogpt.models import weights

    with pytest.warns(DeprecationWarning, match="nanogpt.config.tables.ModelSpec"):
        assert old_tables.ModelSpec is tables.ModelSpec
    with pytest.warns(DeprecationWarning, match="nanogpt.models.weights.load_pretrained"):
        assert old_weights.load_pretrained is weights.load_pretrained
    with pytest.raises(AttributeError):
        old_tables.NoSuchSpec  # noqa: B018


def test_a_plugin_model_trains_resumes_evaluates_and_samples(tmp_path):
    """kind = "mlp" from the docstring's plugin, on the built-in character dataset."""
    spec = tiny_spec(tmp_path, name="mlp", extra='plugins = ["mlp_model"]', model={"kind": "mlp", "width": 48, "block_size": 16, "dropout": 0.1},
                     train={"max_iters": FULL, "eval_interval": 10})
    run = check_end_to_end(spec, tmp_path / "corpus.txt")
    assert (run / "manifest.json").read_text().count('"kind": "mlp"') == 1
    # finetuning from the run: the model is rebuilt from its checkpoint's arch record with its weights,
    # so the first evaluation scores exactly what the run's last one did (the same fixed batches)
    nanogpt("run", str(spec), f"model.init_from={run / 'checkpoints' / 'ckpt-00000020.pt'}", "logging.run_id=tuned",
            "train.max_iters=1", check=True)
    assert losses(run.parent / "tuned")[0][2:] == [e for e in losses(run) if e[1] == "eval"][-1][2:]


def test_a_plugin_dataset_trains_resumes_evaluates_and_samples(tmp_path):
    """kind = "pattern", a dataset of no files at all, under the built-in GPT."""
    spec = tiny_spec(tmp_path, name="pattern", extra='plugins = ["pattern_data"]', data={"kind": "pattern", "repeats": 60},
                     train={"max_iters": FULL, "eval_interval": 10})
    text = tmp_path / "fox.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 8, encoding="utf-8")
    run = check_end_to_end(spec, text)
    assert '"path": "pattern:train"' in (run / "manifest.json").read_text()


def test_built_in_and_plugin_components_keep_the_written_contracts(tmp_path, monkeypatch):
    """GPT and the plugin MLP are LanguageModels, the token files' batches and the plugin's are Batches:
    every method and property the runner calls is there (runtime_checkable checks their presence)."""
    import importlib.util

    from nanogpt.contracts import Batches, LanguageModel
    from nanogpt.data.batches import TokenBatches
    from nanogpt.training.dist import DistEnv
    from nanogpt.models.gpt import GPT, GPTConfig
    from nanogpt.registry import DATA, MODELS
    from nanogpt.config.tables import SystemSpec

    for registry in (MODELS, DATA):  # the kinds the plugins register leave with this test
        monkeypatch.setattr(registry, "_specs", dict(registry._specs))
        monkeypatch.setattr(registry, "_builders", dict(registry._builders))

    def load(name: str):  # imported without a sys.modules entry, so nothing outlives the test
        spec = importlib.util.spec_from_file_location(f"contract_check_{name}", PLUGINS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    mlp_model, pattern_data = load("mlp_model"), load("pattern_data")

    gpt = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=11))
    mlp = mlp_model.build_mlp(mlp_model.MLPSpec(width=8, block_size=8), vocab_size=11)
    assert isinstance(gpt, LanguageModel) and isinstance(mlp, LanguageModel)
    assert not isinstance(object(), LanguageModel)
    env = DistEnv.from_env(SystemSpec(device="cpu"))
    pattern = pattern_data.build_pattern(pattern_data.PatternSpec(), env=env, seed=1, batch_size=2, block_size=8)
    assert isinstance(pattern, Batches)
    assert {name for name in dir(Batches) if not name.startswith("_")} <= set(dir(TokenBatches))


def test_run_with_a_plugin_that_fails_to_import_exits_2_and_makes_nothing(tmp_path):
    """`run`, not only `check`: a named plugin that raises on import is a spec error (exit 2, no traceback),
    found before any work, so no dataset and no run directory exist afterwards."""
    (tmp_path / "broken_kinds.py").write_text("raise ImportError('needs a library this machine lacks')\n", encoding="utf-8")
    spec = tiny_spec(tmp_path, name="broken", extra='plugins = ["broken_kinds"]')
    from tests.tinyrun import env_with_plugins

    env = env_with_plugins()
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    done = nanogpt("run", str(spec), env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "plugins[0]: cannot import 'broken_kinds': ImportError: needs a library this machine lacks" in done.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()
