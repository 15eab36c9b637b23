"""Plugins: a user's module, named in `plugins = [...]`, registers kinds the spec may then use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import attrs
import pytest

from nanogpt.registry import OPTIMIZERS, Registry
from nanogpt.config.problems import SpecError
from nanogpt.config.load import load_spec, loads_spec
from nanogpt.config.canonical import to_toml
from nanogpt.config.jsonschema import experiment_schema
from nanogpt.config.tables import OptimizerSpec
from tests.conftest import REPO

LION = '''
import attrs

from nanogpt.registry import OPTIMIZERS
from nanogpt.config.checks import above, at_least
from nanogpt.config.tables import OptimizerSpec


@attrs.frozen(kw_only=True)
class LionSpec(OptimizerSpec):
    """Lion: the sign of an interpolated momentum."""

    kind: str = "lion"
    lr: float = attrs.field(default=1e-4, validator=above(0.0))
    beta1: float = attrs.field(default=0.9, validator=at_least(0.0))
    weight_decay: float = attrs.field(default=1.0, validator=at_least(0.0))


@OPTIMIZERS.register("lion", LionSpec)
def build_lion(spec, model):
    raise NotImplementedError("the spec half never builds")
'''


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch, restore_registries):
    """A folder on sys.path for plugin modules, each forgotten (with its kinds) after the test."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("nanogpt_test_"):
            del sys.modules[name]


def write_plugin(folder: Path, name: str, source: str) -> str:
    (folder / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return name


def test_plugin_makes_its_kind_valid(plugin_dir):
    """Naming the plugin module makes its kind, with its own fields and bounds, a valid optimizer."""
    write_plugin(plugin_dir, "nanogpt_test_lion", LION)
    Path("s.toml").write_text(
        'name = "l"\nplugins = ["nanogpt_test_lion"]\n[optimizer]\nkind = "lion"\nbeta1 = 0.95\n', encoding="utf-8"
    )
    exp, _ = load_spec("s.toml")
    assert type(exp.optimizer).__name__ == "LionSpec"
    assert (exp.optimizer.kind, exp.optimizer.beta1, exp.optimizer.lr) == ("lion", 0.95, 1e-4)
    # show's output names the plugin, so it stands on its own.
    text = to_toml(exp)
    assert 'plugins = ["nanogpt_test_lion"]' in text
    assert loads_spec(text) == exp


def test_plugin_kind_is_validated_like_a_builtin(plugin_dir):
    """A plugin's spec class gets the same type, range and unknown-key checks as built-in kinds."""
    write_plugin(plugin_dir, "nanogpt_test_lion", LION)
    Path("s.toml").write_text(
        'name = "l"\nplugins = ["nanogpt_test_lion"]\n[optimizer]\nkind = "lion"\nlr = 0\nbeta = 0.9\n',
        encoding="utf-8",
    )
    with pytest.raises(SpecError) as e:
        load_spec("s.toml")
    assert e.value.report() == (
        "s.toml: 2 problems\n"
        "  optimizer.lr: must be > 0.0 (got 0.0)\n"
        "  optimizer.beta: unknown key (did you mean 'beta1'?)"
    )


def test_without_the_plugin_the_kind_is_unknown(plugin_dir):
    """The same spec without `plugins` does not know the kind, and lists the kinds it does know."""
    write_plugin(plugin_dir, "nanogpt_test_lion", LION)
    with pytest.raises(SpecError) as e:
        loads_spec('name = "l"\n[optimizer]\nkind = "lion"\n', source="s.toml")
    assert e.value.report() == "s.toml: 1 problem\n  optimizer.kind: unknown kind 'lion' (known: adamw, muon, sgd)"


def test_plugin_that_fails_to_import(plugin_dir):
    """A plugin that raises on import, or does not exist, is reported at its index in plugins."""
    write_plugin(plugin_dir, "nanogpt_test_broken", "raise RuntimeError('no GPU here')\n")
    with pytest.raises(SpecError) as e:
        loads_spec('name = "b"\nplugins = ["json", "nanogpt_test_broken", "nanogpt_test_absent"]\n', source="s.toml")
    assert e.value.report() == (
        "s.toml: 2 problems\n"
        "  plugins[1]: cannot import 'nanogpt_test_broken': RuntimeError: no GPU here\n"
        "  plugins[2]: cannot import 'nanogpt_test_absent': ModuleNotFoundError: No module named 'nanogpt_test_absent'"
    )


def test_plugin_names_must_be_module_names():
    """A plugin entry that is no dotted module name (or no string) is refused, and nothing is imported for it."""
    with pytest.raises(SpecError) as e:
        loads_spec('name = "b"\nplugins = ["json", ""]\n', source="s.toml")
    assert e.value.report() == "s.toml: 1 problem\n  plugins[1]: must be a dotted module name (got '')"
    with pytest.raises(SpecError) as e:
        loads_spec('name = "b"\nplugins = ["json", 3]\n', source="s.toml")
    assert e.value.report() == "s.toml: 1 problem\n  plugins[1]: must be a string (got 3)"


def test_schema_lists_a_plugin_kind_while_it_is_loaded(plugin_dir):
    """The schema is generated from the registry, so a loaded plugin's kind is one of its variants."""
    write_plugin(plugin_dir, "nanogpt_test_lion", LION)
    loads_spec('name = "l"\nplugins = ["nanogpt_test_lion"]\n')
    kinds = [v["properties"]["kind"]["const"] for v in experiment_schema()["properties"]["optimizer"]["oneOf"]]
    assert kinds == ["adamw", "lion", "muon", "sgd"]


def test_register_refuses_a_class_whose_kind_disagrees():
    """A spec class must default `kind` to the name it is registered under, or specs would not round-trip."""

    @attrs.frozen(kw_only=True)
    class OddSpec(OptimizerSpec):
        kind: str = "odd"
        lr: float = 0.1

    registry = Registry("optimizer", OptimizerSpec, "adamw")
    with pytest.raises(TypeError, match="needs a field `kind: str = 'even'`"):
        registry.register("even", OddSpec)
    with pytest.raises(TypeError, match="must be an attrs class"):
        registry.register("plain", type("Plain", (), {}))
    registry.register("odd", OddSpec, "somewhere:build_odd")
    assert registry.kinds() == ["odd"] and registry.spec_class("odd") is OddSpec
    assert "odd" not in OPTIMIZERS.kinds()


def test_registry_imports_first_without_a_cycle():
    """`import nanogpt.registry` as the very first import works (a plugin or builder may start there)."""
    for module in ("nanogpt.registry", "nanogpt.config.convert", "nanogpt.config.load", "nanogpt.config.jsonschema"):
        done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------- plugins that misbehave

MISBEHAVING = {
    "nanogpt_test_exit0": ("import sys\nsys.exit(0)\n", "SystemExit: it called sys.exit(0) while being imported"),
    "nanogpt_test_exit3": ("import sys\nsys.exit(3)\n", "SystemExit: it called sys.exit(3) while being imported"),
    "nanogpt_test_ctrl_c": ("raise KeyboardInterrupt\n", "KeyboardInterrupt: it was interrupted while being imported"),
}


def check_in_process(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`python -m nanogpt check ARGS` in `folder`, with `folder` on the path (a real process: what a plugin
    does to the interpreter, sys.exit or Ctrl-C, must not reach the test's)."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(REPO)]), **env}
    return subprocess.run([sys.executable, "-m", "nanogpt", "check", *args], cwd=folder, env=environment,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module", MISBEHAVING)
def test_a_plugin_that_exits_or_is_interrupted_is_a_spec_error(tmp_path, module):
    """A plugin calling sys.exit(0) made `check` exit 0 with no verdict (a bad spec passed), sys.exit(3) exit 3,
    and KeyboardInterrupt a traceback: each is now exit 2 naming the plugin."""
    source, message = MISBEHAVING[module]
    write_plugin(tmp_path, module, source)
    (tmp_path / "s.toml").write_text(f'name = "p"\nplugins = ["{module}"]\n', encoding="utf-8")
    done = check_in_process(tmp_path, "s.toml")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"s.toml: 1 problem\n  plugins[0]: cannot import '{module}': {message}\n"


STANDIN_ENTRY_POINTS = """\
[nanogpt.plugins]
broken = nanogpt_standin_broken
exits = nanogpt_standin_exits:register
lion = nanogpt_standin_lion
"""


@pytest.fixture
def installed(tmp_path) -> Path:
    """A folder holding a really installed distribution, `nanogpt-standin 0.1` (its .dist-info, as pip
    --target leaves it), whose three `nanogpt.plugins` entry points are a module that raises, one that
    calls sys.exit(0), and one that registers the optimizer kind 'lion'."""
    site = tmp_path / "site"
    info = site / "nanogpt_standin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nanogpt-standin\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(STANDIN_ENTRY_POINTS, encoding="utf-8")
    write_plugin(site, "nanogpt_standin_broken", "raise ImportError('needs a GPU library this machine lacks')\n")
    write_plugin(site, "nanogpt_standin_exits", "import sys\nsys.exit(0)\n")
    write_plugin(site, "nanogpt_standin_lion", LION)
    (site / "s.toml").write_text('name = "l"\n[optimizer]\nkind = "lion"\nbeta1 = 0.95\n', encoding="utf-8")
    return site


def test_installed_plugins_that_fail_are_named_and_the_others_still_load(installed):
    """Entry points that fail to import are each a clear exit-2 error naming the plugin and its package; the
    entry point after them still loads (its kind 'lion' is known, not "unknown kind")."""
    done = check_in_process(installed, "s.toml")
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr == (
        "s.toml: 2 problems\n"
        "  plugins: installed plugin 'broken' (module 'nanogpt_standin_broken', from nanogpt-standin 0.1) cannot be "
        "imported: ImportError: needs a GPU library this machine lacks\n"
        "  plugins: installed plugin 'exits' (module 'nanogpt_standin_exits', from nanogpt-standin 0.1) cannot be "
        "imported: SystemExit: it called sys.exit(0) while being imported\n"
    )


def test_installed_plugin_kinds_work_once_the_broken_ones_are_gone(installed):
    """With only the working entry point installed, the spec using its kind passes `check`, and `schema` lists it."""
    (installed / "nanogpt_standin-0.1.dist-info" / "entry_points.txt").write_text(
        "[nanogpt.plugins]\nlion = nanogpt_standin_lion\n", encoding="utf-8"
    )
    done = check_in_process(installed, "s.toml")
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok: s.toml\n", "")
    schema = subprocess.run([sys.executable, "-m", "nanogpt", "schema"], cwd=installed, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(installed), str(REPO)])})
    optimizers = json.loads(schema.stdout)["properties"]["optimizer"]["oneOf"]
    assert [v["properties"]["kind"]["const"] for v in optimizers] == ["adamw", "lion", "muon", "sgd"]


def test_schema_refuses_to_leave_out_a_broken_installed_plugin(installed):
    """`schema` would silently lack a broken plugin's kinds: it names the plugin and exits 2 instead."""
    done = subprocess.run([sys.executable, "-m", "nanogpt", "schema"], cwd=installed, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(installed), str(REPO)])})
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: installed plugin 'broken' (module 'nanogpt_standin_broken', from nanogpt-standin 0.1)")
    assert "\nerror: installed plugin 'exits'" in done.stderr


CONV = '''
import attrs

from nanogpt.registry import MODELS
from nanogpt.config.tables import ModelSpec


@attrs.frozen(kw_only=True)
class ConvSpec(ModelSpec):
    ARCH_FIELDS = ("width", "kernel", "block_size")

    kind: str = "conv"
    width: int = 64
    kernel: int = 3
    lr_scale: float = 1.0


MODELS.register("conv", ConvSpec, "nanogpt_test_conv:build_conv")
'''


def conv_run(folder: Path, name: str, model: dict) -> str:
    """A run directory as `run` leaves it, as far as `check` reads one: its manifest's spec and vocabulary."""
    run = folder / "runs" / name
    run.mkdir(parents=True)
    spec = {"name": name, "plugins": ["nanogpt_test_conv"], "model": model}
    (run / "manifest.json").write_text(json.dumps({"spec": spec, "model": {"vocab_size": 65}}), encoding="utf-8")
    return str(run.relative_to(folder))


def test_a_plugin_model_kind_takes_its_declared_fields_from_an_init_from_run(plugin_dir):
    """The fields a plugin kind names in ARCH_FIELDS come from the run `init_from` names, as a GPT's do;
    fields it does not name keep the spec's values."""
    write_plugin(plugin_dir, "nanogpt_test_conv", CONV)
    run = conv_run(plugin_dir, "first", {"kind": "conv", "width": 96, "kernel": 5, "block_size": 128, "lr_scale": 2.0})
    Path("s.toml").write_text(
        f'name = "s"\nplugins = ["nanogpt_test_conv"]\n[model]\nkind = "conv"\ninit_from = "{run}"\n', encoding="utf-8"
    )
    exp, origin = load_spec("s.toml")
    assert (exp.model.width, exp.model.kernel, exp.model.block_size, exp.model.lr_scale) == (96, 5, 128, 1.0)
    assert origin.source_of("model.kernel") == f"pretrained {run}"
    assert origin.source_of("model.lr_scale") == "default"


def test_a_plugin_model_kind_is_held_to_the_fields_it_declares(plugin_dir):
    """Stated fields that disagree with the run are refused with the built-in kinds' messages, and a run
    of another kind is refused naming it."""
    write_plugin(plugin_dir, "nanogpt_test_conv", CONV)
    run = conv_run(plugin_dir, "first", {"kind": "conv", "width": 96, "kernel": 5, "block_size": 128})
    Path("s.toml").write_text(
        f'name = "s"\nplugins = ["nanogpt_test_conv"]\n[model]\nkind = "conv"\ninit_from = "{run}"\n'
        "kernel = 7\nblock_size = 256\nlr_scale = 3.0\n",
        encoding="utf-8",
    )
    with pytest.raises(SpecError) as e:
        load_spec("s.toml")
    assert e.value.report() == (
        "s.toml: 2 problems\n"
        "  model.kernel: 7 must equal the pretrained model's (5), or be left out\n"
        "  model.block_size: 256 must not exceed the pretrained model's (128)"
    )
    gpt_run = conv_run(plugin_dir, "gpt", {"kind": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 32})
    with pytest.raises(SpecError) as e:
        load_spec("s.toml", [f"model.init_from={gpt_run}", "model.kernel=", "model.block_size="])
    assert e.value.report() == (
        f"s.toml: 1 problem\n  model.init_from: {str(Path(gpt_run))!r} is a run of a 'gpt' model "
        f"(its spec's model.kind) (override model.init_from={gpt_run})"
    )


def test_a_run_whose_manifest_records_no_kind_is_a_gpt_run(tmp_path, monkeypatch):
    """Manifests from before model kinds record no `model.kind`: they are read as GPT runs, and a llama
    spec naming one is refused."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "old"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"spec": {"model": {"n_layer": 3, "n_head": 2, "n_embd": 48}},
                                                   "model": {"vocab_size": 65}}), encoding="utf-8")
    exp = load_spec(_spec(tmp_path, 'init_from = "old"'))[0]
    assert (exp.model.kind, exp.model.n_layer, exp.model.n_embd, exp.model.vocab_size) == ("gpt", 3, 48, 65)
    with pytest.raises(SpecError, match="'old' is a run of a 'gpt' model"):
        load_spec(_spec(tmp_path, 'kind = "llama"\ninit_from = "old"'))


def _spec(folder: Path, model: str) -> Path:
    path = folder / "s.toml"
    path.write_text(f'name = "s"\n[model]\n{model}\n', encoding="utf-8")
    return path
