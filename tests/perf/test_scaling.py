"""The scaling-law calculators against the seed's scaling_laws.ipynb, and the `nanogpt scaling` verb."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanogpt.config import sizes
from nanogpt.perf import laws
from nanogpt.cli import main
from nanogpt.perf.scaling import scaling_command
from nanogpt.config.problems import SpecError

# The notebook's last cell, as printed in the seed (scaling_laws.ipynb, execution_count 8).
NOTEBOOK_SWEEP = """\
compute budget 1.000000e+17: best model size: 29.43M, best dataset size: 0.57B
compute budget 1.778279e+17: best model size: 36.52M, best dataset size: 0.81B
compute budget 3.162278e+17: best model size: 48.70M, best dataset size: 1.08B
compute budget 5.623413e+17: best model size: 60.43M, best dataset size: 1.55B
compute budget 1.000000e+18: best model size: 80.58M, best dataset size: 2.07B
compute budget 1.778279e+18: best model size: 107.46M, best dataset size: 2.76B
compute budget 3.162278e+18: best model size: 133.35M, best dataset size: 3.95B
compute budget 5.623413e+18: best model size: 177.83M, best dataset size: 5.27B
compute budget 1.000000e+19: best model size: 220.67M, best dataset size: 7.55B
compute budget 1.778279e+19: best model size: 294.27M, best dataset size: 10.07B
compute budget 3.162278e+19: best model size: 392.42M, best dataset size: 13.43B
compute budget 5.623413e+19: best model size: 486.97M, best dataset size: 19.25B
compute budget 1.000000e+20: best model size: 649.38M, best dataset size: 25.67B
compute budget 1.778279e+20: best model size: 865.96M, best dataset size: 34.23B
compute budget 3.162278e+20: best model size: 1074.61M, best dataset size: 49.05B
compute budget 5.623413e+20: best model size: 1433.01M, best dataset size: 65.40B
compute budget 1.000000e+21: best model size: 1778.28M, best dataset size: 93.72B
compute budget 1.778279e+21: best model size: 2371.37M, best dataset size: 124.98B
compute budget 3.162278e+21: best model size: 3162.28M, best dataset size: 166.67B
compute budget 5.623413e+21: best model size: 3924.19M, best dataset size: 238.84B
compute budget 1.000000e+22: best model size: 5232.99M, best dataset size: 318.49B
compute budget 1.778279e+22: best model size: 6493.82M, best dataset size: 456.40B
compute budget 3.162278e+22: best model size: 8659.64M, best dataset size: 608.62B
compute budget 5.623413e+22: best model size: 11547.82M, best dataset size: 811.61B
compute budget 1.000000e+23: best model size: 14330.13M, best dataset size: 1163.05B
compute budget 1.778279e+23: best model size: 19109.53M, best dataset size: 1550.95B
compute budget 3.162278e+23: best model size: 23713.74M, best dataset size: 2222.54B
compute budget 5.623413e+23: best model size: 31622.78M, best dataset size: 2963.80B
compute budget 1.000000e+24: best model size: 42169.65M, best dataset size: 3952.29B
compute budget 1.778279e+24: best model size: 52329.91M, best dataset size: 5663.68B
compute budget 3.162278e+24: best model size: 69783.06M, best dataset size: 7552.64B
compute budget 5.623413e+24: best model size: 93057.20M, best dataset size: 10071.61B
compute budget 1.000000e+25: best model size: 115478.20M, best dataset size: 14432.74B
compute budget 1.778279e+25: best model size: 153992.65M, best dataset size: 19246.37B
compute budget 3.162278e+25: best model size: 191095.30M, best dataset size: 27580.28B
compute budget 5.623413e+25: best model size: 254829.67M, best dataset size: 36778.90B"""


# --------------------------------------------------------------------- the notebook's numbers


def test_gpt2_params_match_notebook():
    """GPT-2 124M has 123.653376M parameters by the notebook's accounting."""
    assert sizes.params(**laws.GPT2_124M) == 123_653_376
    assert sizes.params(**laws.GPT2_124M) / 1e6 == 123.653376


def test_gpt2_flops_match_notebook():
    """GPT-2 124M costs 766.006788096 GFLOPs per 1024-token sequence by Chinchilla's Appendix F, as the notebook counts."""
    assert sizes.chinchilla_flops(**laws.GPT2_124M) == 766_006_788_096
    assert sizes.chinchilla_flops(**laws.GPT2_124M) / 1e9 == 766.006788096


def test_full_width_mlp_flops_exceed_notebook_by_the_mlp_term():
    """Counting the MLP at its real width adds exactly the notebook's missing 2·T·2·d·(4d - 4) per layer, x3."""
    g = laws.GPT2_124M
    full = sizes.chinchilla_flops(**g, ffw_size=4 * g["n_embd"])
    missing = 3 * g["n_layer"] * 2 * g["block_size"] * 2 * g["n_embd"] * (4 * g["n_embd"] - 4)
    assert full - sizes.chinchilla_flops(**g) == missing == 347_439_366_144


def test_chinchilla_73m_comparison_matches_notebook():
    """The notebook's Table A4 check: 69.72M params, 428.34B approx FLOPs, 434.11B Chinchilla FLOPs, ratio 1.01."""
    args = laws.CHINCHILLA_73M
    D = 1024
    N = sizes.params(**args)
    approx = sizes.flops_6nd(N, D)
    chinch = sizes.chinchilla_flops(**args) * (D / args["block_size"])
    assert f"{N / 1e6:.2f}M" == "69.72M"
    assert f"{approx / 1e9:.2f}B" == "428.34B"
    assert f"{chinch / 1e9:.2f}B" == "434.11B"
    assert f"{chinch / approx:.2f}" == "1.01"


def test_compute_optimal_for_the_notebook_budget():
    """A 1.92e19 budget on the notebook's grid gives 316.23M params and 10.12B tokens."""
    best = laws.compute_optimal(1.92e19, laws.NOTEBOOK_GRID)
    assert f"{best.n_params / 1e6:.2f}M" == "316.23M"
    assert f"{best.tokens / 1e9:.2f}B" == "10.12B"
    assert best.tokens * best.n_params * 6 == pytest.approx(1.92e19)


def test_budget_sweep_reproduces_every_notebook_row():
    """Every row of the notebook's budget sweep is printed identically."""
    rows = [laws.sweep_line(o) for o in laws.budget_sweep()]
    assert rows == NOTEBOOK_SWEEP.splitlines()


def test_chinchilla_loss_formula():
    """L(N, D) is E + A/N^alpha + B/D^beta with Chinchilla's constants."""
    n, d = 70e9, 1.4e12
    expected = 1.69 + 406.4 / n**0.34 + 410.7 / d**0.28
    assert laws.chinchilla_loss(n, d) == expected
    assert laws.chinchilla_loss(n, d) == pytest.approx(1.9367, abs=1e-4)


def test_log_grid_matches_numpy_arange():
    """The grids are numpy.arange's points, 10 ** x, to the last bit or so (numpy's pow may differ by an ulp)."""
    np = pytest.importorskip("numpy")
    for grid in (laws.NOTEBOOK_GRID, laws.SWEEP_GRID, laws.SWEEP_BUDGETS):
        ours = laws.log_grid(*grid)
        theirs = (10 ** np.arange(grid[0], grid[1], step=grid[2])).tolist()
        assert ours == pytest.approx(theirs, rel=1e-15, abs=0)


# ---------------------------------------------------------------------------- properties


@settings(max_examples=60, deadline=None)
@given(st.floats(min_value=1e15, max_value=1e27))
def test_exact_optimum_beats_every_grid_point(compute):
    """The closed-form optimum's loss is no higher than any model size's on the line C = 6ND."""
    exact = laws.compute_optimal_exact(compute)
    assert exact.n_params * exact.tokens * 6 == pytest.approx(compute)
    for n in laws.log_grid(5, 15, 0.25):
        assert exact.loss <= laws.chinchilla_loss(n, compute / (6 * n)) + 1e-12


@settings(max_examples=60, deadline=None)
@given(st.floats(min_value=1e5, max_value=1e13))
def test_optimal_tokens_inverts_the_optimum(n_params):
    """A model of N params is compute-optimal exactly when trained on optimal_tokens(N) tokens."""
    d = laws.optimal_tokens(n_params)
    assert laws.compute_optimal_exact(6 * n_params * d).n_params == pytest.approx(n_params, rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 200_000), st.integers(1, 256))
def test_padded_vocab_rule(vocab, multiple):
    """Padding rounds up to the multiple only when it adds at most 1% rows, and never shrinks."""
    p = sizes.padded_vocab(vocab, multiple)
    assert p >= vocab
    rounded = math.ceil(vocab / multiple) * multiple
    assert p == (rounded if rounded - vocab <= vocab / 100 else vocab)


def test_padded_vocab_examples():
    """GPT-2's 50257 pads to 50304 with 64; a character vocabulary of 65 stays 65."""
    assert sizes.padded_vocab(50257, 64) == 50304
    assert sizes.padded_vocab(65, 64) == 65
    assert sizes.padded_vocab(50257, 1) == 50257


def test_mfu_formula_is_nanogpts():
    """flops per token is 6N + 12·L·H·Q·T, and MFU divides the achieved FLOP/s by the peak."""
    n = sizes.params(**{**laws.GPT2_124M, "vocab_size": 50304})
    fpt = sizes.mfu_flops_per_token(n_params=n, n_layer=12, n_head=12, n_embd=768, block_size=1024)
    assert fpt == 6 * n + 12 * 12 * 12 * 64 * 1024
    assert sizes.mfu(fpt, tokens_per_sec=1e5, peak_flops=312e12) == pytest.approx(fpt * 1e5 / 312e12)
    with pytest.raises(ValueError, match="peak_flops"):
        sizes.mfu(fpt, 1.0, 0.0)


def test_sizes_are_validated():
    """Non-positive or indivisible sizes raise ValueError naming the field."""
    with pytest.raises(ValueError, match="n_layer must be a positive integer"):
        sizes.params(n_layer=0, n_head=1, n_embd=8, block_size=8, vocab_size=8)
    with pytest.raises(ValueError, match=r"n_embd \(10\) must be divisible by n_head \(3\)"):
        sizes.chinchilla_flops(n_layer=1, n_head=3, n_embd=10, block_size=8, vocab_size=8)


def test_importing_scaling_imports_neither_torch_nor_numpy():
    """nanogpt.config.sizes stays torch-free and numpy-free, so the verb answers instantly."""
    code = "import sys, nanogpt.config.sizes; print(sorted({'torch', 'numpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------- the verb


def run_verb(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["scaling", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_verb_params_from_sizes(capsys):
    """`scaling params --n-layer ...` prints the notebook's count and the model's."""
    code, out, _ = run_verb(capsys, "params", "--n-layer", "12", "--n-head", "12", "--n-embd", "768", "--block-size", "1024")
    assert code == 0
    assert "123,653,376 (123.653M)" in out
    assert "124,475,904" in out  # every tensor of the model once, vocab padded to 50304
    assert "50257 (padded to 50304 in the model)" in out
    assert "GPT-2's, as no --vocab-size was given" in out


def test_verb_flops_json(capsys):
    """`scaling flops ... --json` gives the notebook's FLOPs and nanoGPT's MFU count as data."""
    code, out, _ = run_verb(
        capsys, "flops", "--n-layer", "12", "--n-head", "12", "--n-embd", "768", "--block-size", "1024",
        "--vocab-size", "50257", "--pad-vocab-multiple", "1", "--json",
    )
    assert code == 0
    data = json.loads(out)
    assert data["flops_per_sequence_chinchilla"] == 766_006_788_096
    assert data["params"] == 123_653_376
    assert data["flops_per_token_mfu"] == 6 * 123_653_376 + 12 * 12 * 768 * 1024
    assert "training" not in data


def test_verb_optimal_prints_notebook_answer(capsys):
    """`scaling optimal --compute 1.92e19` prints 316.23M params and 10.12B tokens."""
    code, out, _ = run_verb(capsys, "optimal", "--compute", "1.92e19")
    assert code == 0
    row = out.splitlines()[1].split()
    assert row[:3] == ["1.920000e+19", "316.23M", "10.12B"]


def test_verb_optimal_names_the_grid_behind_each_answer(capsys):
    """One budget, two grids, two answers: each table's footer names the grid its N comes from
    and how to pick the other, and --json gives each row's grid."""
    code, out, _ = run_verb(capsys, "optimal", "--compute", "1e19")
    assert out.splitlines()[1].split()[1] == "237.14M"
    assert "on the notebook's single-budget grid (10M-100B, 16 sizes per decade); --grid sweep" in out
    code, out, _ = run_verb(capsys, "optimal", "--compute", "1e19", "--grid", "sweep")
    assert out.splitlines()[1].split()[1] == "220.67M"
    assert "on the notebook's sweep grid (10M-10T, 32 sizes per decade); --grid notebook" in out
    code, out, _ = run_verb(capsys, "optimal", "--sweep")
    assert "1.000000e+19 220.67M" in " ".join(out.split()) and "on the notebook's sweep grid" in out
    code, out, _ = run_verb(capsys, "optimal", "--sweep", "--compute", "1e19", "--json")
    rows = json.loads(out)
    assert [r["grid"] for r in rows] == ["sweep"] * 36 + ["notebook"]


def test_verb_optimal_sweep_rows(capsys):
    """`scaling optimal --sweep --json` gives the notebook's 36 budgets and optima."""
    code, out, _ = run_verb(capsys, "optimal", "--sweep", "--json")
    assert code == 0
    rows = json.loads(out)
    lines = [laws.sweep_line(laws.Optimum(r["compute"], r["n_params"], r["tokens"], r["loss"])) for r in rows]
    assert lines == NOTEBOOK_SWEEP.splitlines()


def test_verb_loss(capsys):
    """`scaling loss --params 124M --tokens 300B` prints L(N, D) and says the run is over-trained."""
    code, out, _ = run_verb(capsys, "loss", "--params", "124M", "--tokens", "300B")
    assert code == 0
    assert f"{laws.chinchilla_loss(124e6, 300e9):.4f}" in out
    assert "over-trained" in out


def write_spec(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(body, encoding="utf-8")
    return path


TINY_SPEC = """\
name = "tiny"
[model]
n_layer = 2
n_head = 2
n_embd = 32
block_size = 16
[data]
dataset = "tiny"
data_dir = "{data_dir}"
tokenizer = "{tokenizer}"
[train]
batch_size = 4
grad_accum = 2
max_iters = 1000
"""


def test_verb_spec_reports_training_tokens_and_verdict(capsys, tmp_path):
    """For a spec, the verb adds the tokens max_iters consumes and where that sits against compute-optimal."""
    spec = write_spec(tmp_path, TINY_SPEC.format(data_dir=tmp_path / "data", tokenizer="gpt2"))
    code, out, _ = run_verb(capsys, "params", str(spec), "--json")
    assert code == 0
    data = json.loads(out)
    t = data["training"]
    assert t["tokens_per_iter"] == 4 * 2 * 16 and t["tokens"] == 128_000
    assert data["arch"]["vocab_size"] == 50257 and "not prepared" in data["vocab_note"]
    n = sizes.params(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50257)
    assert data["params"] == n
    assert t["training_factor"] == pytest.approx(128_000 / laws.optimal_tokens(n))
    code, out, _ = run_verb(capsys, "params", str(spec))
    assert "under-trained" in out and "128.00K  (1,000 iters)" in out


def test_verb_spec_overrides_and_dataset_vocab(capsys, tmp_path):
    """A prepared dataset's meta.json gives the vocabulary, and key=value words override the spec."""
    data_dir = tmp_path / "data"
    (data_dir / "tiny").mkdir(parents=True)
    (data_dir / "tiny" / "meta.json").write_text(json.dumps({"vocab_size": 65}), encoding="utf-8")
    spec = write_spec(tmp_path, TINY_SPEC.format(data_dir=data_dir, tokenizer="char"))
    code, out, _ = run_verb(capsys, "flops", str(spec), "model.n_layer=3", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["arch"]["n_layer"] == 3 and data["arch"]["vocab_size"] == 65
    assert data["arch"]["padded_vocab_size"] == 65


def test_verb_char_spec_without_dataset_is_a_clear_error(capsys, tmp_path):
    """A char spec whose dataset is not prepared yet exits 2 and says how to fix it."""
    spec = write_spec(tmp_path, TINY_SPEC.format(data_dir=tmp_path / "nowhere", tokenizer="char"))
    code, _, err = run_verb(capsys, "params", str(spec))
    assert code == 2
    assert "not prepared yet" in err and "model.vocab_size=N" in err and "Traceback" not in err


def test_verb_bad_spec_propagates_spec_error(tmp_path):
    """A bad spec raises SpecError from scaling_command, which the CLI prints with exit 2."""
    spec = write_spec(tmp_path, 'name = "x"\n[model]\nn_layer = 0\n')
    with pytest.raises(SpecError, match="model.n_layer"):
        scaling_command(["params", str(spec)])


def test_verb_bad_spec_exits_2(capsys, tmp_path):
    """Through the CLI a bad spec prints its problems and exits 2."""
    spec = write_spec(tmp_path, 'name = "x"\n[model]\nn_layer = 0\n')
    code, _, err = run_verb(capsys, "flops", str(spec))
    assert code == 2 and "model.n_layer" in err


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "required"),
        (["params"], "give a SPEC, or the sizes (missing --n-layer, --n-head, --n-embd, --block-size)"),
        (["params", "--n-layer", "2", "--n-head", "3", "--n-embd", "32", "--block-size", "8"], "divisible"),
        (["params", "s.toml", "--n-layer", "2"], "not both"),
        (["optimal"], "needs --compute C or --sweep"),
        (["optimal", "--compute", "lots"], "'lots' is not a number"),
        (["loss", "--params", "-5", "--tokens", "1B"], "must be a positive number"),
        (["loss", "--params", "1M"], "--tokens"),
    ],
)
def test_verb_usage_errors_exit_2(capsys, args, message):
    """Bad arguments exit 2 with a usage line and a message naming the problem."""
    code, _, err = run_verb(capsys, *args)
    assert code == 2
    assert "usage" in err and message in err


# --------------------------------------------------------------------------------- llama specs


@st.composite
def llama_tables(draw) -> dict:
    n_kv_head = draw(st.integers(1, 3))
    n_head = n_kv_head * draw(st.integers(1, 3))  # plain and grouped-query attention
    table = dict(kind="llama", n_layer=draw(st.integers(1, 3)), n_head=n_head, n_kv_head=n_kv_head,
                 n_embd=n_head * draw(st.sampled_from([2, 8, 16])), block_size=draw(st.integers(1, 64)),
                 vocab_size=draw(st.integers(2, 500)), tie_embeddings=draw(st.booleans()))
    if draw(st.booleans()):  # else Llama's rule from n_embd
        table["intermediate_size"] = draw(st.integers(1, 100))
    return table


def llama_spec_text(table: dict) -> str:
    fields = "\n".join(f"{k} = {json.dumps(v)}" for k, v in table.items())
    return f'name = "l"\n[model]\n{fields}\n'


def verb_json(*args: str) -> dict:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert scaling_command([*args, "--json"]) == 0
    return json.loads(out.getvalue())


@settings(max_examples=20, deadline=None)
@given(table=llama_tables())
def test_verb_counts_a_llama_spec_as_the_model_does(tmp_path_factory, table):
    """`scaling params|flops` on a llama spec: every tensor of the model llama.py builds from it, its
    N, and its MFU FLOPs per token, 6N + 12·L·H·Q·T, for plain and grouped-query attention, tied or not."""
    from nanogpt.models.llama import Llama, LlamaConfig
    from nanogpt.config.load import load_spec

    spec = tmp_path_factory.mktemp("llama") / "l.toml"
    spec.write_text(llama_spec_text(table), encoding="utf-8")
    model = Llama(LlamaConfig.from_spec(load_spec(spec)[0].model, table["vocab_size"]))
    params_report, flops_report = verb_json("params", str(spec)), verb_json("flops", str(spec))
    assert params_report["params_model_total"] == sum(p.numel() for p in model.parameters())
    assert params_report["params"] == params_report["params_model_non_embedding"] == model.num_params()
    L, C, T = table["n_layer"], table["n_embd"], table["block_size"]
    assert flops_report["flops_per_token_mfu"] == model.flops_per_token() == 6 * model.num_params() + 12 * L * C * T
    assert flops_report["flops_per_token_6n"] == 6 * model.num_params()
    assert flops_report["arch"]["intermediate_size"] == model.config.intermediate_size


def test_a_llama_with_full_heads_and_gpts_mlp_weights_costs_gpts_full_width_flops():
    """Chinchilla's Appendix F at real widths: a Llama whose k and v have every head and whose three
    MLP matrices are 8d/3 wide (GPT's 8d² weights) costs what a GPT costs with its MLP at full width."""
    shape = dict(n_layer=3, n_head=4, n_embd=48, block_size=64, vocab_size=500)
    llama = sizes.llama_chinchilla_flops(**shape, n_kv_head=4, intermediate_size=128)
    assert llama == sizes.chinchilla_flops(**shape, ffw_size=4 * 48)
    grouped = sizes.llama_chinchilla_flops(**shape, n_kv_head=1, intermediate_size=128)
    assert llama - grouped == 3 * 3 * 2 * 2 * 64 * 48 * (48 - 12)  # k and v project to 1 head of 12, not 4: forward+backward x layers


def test_verb_memory_plans_a_llama_spec(tmp_path):
    """`scaling memory` on a llama spec plans the Llama the spec builds, as measured: its parameters,
    gradients (and DDP's bucket copy), AdamW's two moments, whole under ddp and rank 0's torch.chunk
    shards under fsdp over 2; and ddp's activations are what autograd keeps under bf16 autocast (by
    PyTorch's saved-tensor hooks) plus the logits' gradient, float32 and its 16-bit copy."""
    from nanogpt.config.load import load_spec
    from nanogpt.models.llama import Llama, LlamaConfig
    from tests.perf.test_memory import measured_saved_bytes

    table = dict(kind="llama", n_layer=2, n_head=4, n_kv_head=2, n_embd=64, block_size=160, vocab_size=300)
    spec = tmp_path / "l.toml"
    spec.write_text(llama_spec_text(table) + "[train]\nbatch_size = 3\n", encoding="utf-8")
    report = verb_json("memory", str(spec), "--world-size", "2")
    rows = {r["parallel"]: r for r in report["rows"] if r["activation_checkpointing"] == "none"}
    config = LlamaConfig.from_spec(load_spec(spec)[0].model, 300)
    params = list(Llama(config).parameters())
    n = sum(p.numel() for p in params)
    shard = sum(p.chunk(2, dim=0)[0].numel() for p in params)  # rank 0's, as FSDP2 cuts them
    assert (rows["ddp"]["params"], rows["ddp"]["grads"], rows["ddp"]["optimizer"]) == (4 * n, 8 * n, 8 * n)
    # train.grad_accum's default 40 is 20 micro-steps a process: fsdp holds whole float32 gradients between them
    assert (rows["fsdp"]["params"], rows["fsdp"]["grads"], rows["fsdp"]["optimizer"]) == (4 * shard, 4 * shard + 4 * n, 8 * shard)
    logits_grad = 3 * 160 * 300 * (4 + 2)
    assert rows["ddp"]["activations"] == measured_saved_bytes(config, 3, half=True) + logits_grad
