# The registry docstring's plugin example as it stood before the layout move (commit 5030820),
# verbatim: plugins copied from it import nanogpt.spec.tables and nanogpt.weights, which must keep working.
import attrs
import torch
from torch import nn
from torch.nn import functional as F

from nanogpt.registry import MODELS
from nanogpt.spec.tables import ModelSpec
from nanogpt.weights import load_pretrained


@attrs.frozen(kw_only=True)
class MLPSpec(ModelSpec):
    ARCH_FIELDS = ("width",)  # left out, it comes from an init_from run; stated, it must agree
    kind: str = "mlp"
    width: int = 256


class MLP(nn.Module):
    # the next token from the current one alone, through one hidden layer (a bigram model)

    def __init__(self, spec: MLPSpec, vocab_size: int):
        super().__init__()
        self.width, self.vocab_size, self.context_length = spec.width, vocab_size, spec.block_size
        self.wte = nn.Embedding(vocab_size, spec.width)
        self.drop = nn.Dropout(spec.dropout)
        self.head = nn.Linear(spec.width, vocab_size)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, all_logits: bool = False):
        logits = self.head(self.drop(F.gelu(self.wte(idx))))  # (B, T, vocab_size)
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)

    def num_params(self, non_embedding: bool = True) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self) -> int:
        return 6 * self.num_params()

    def arch(self) -> dict:
        return {"kind": "mlp", "width": self.width, "block_size": self.context_length, "vocab_size": self.vocab_size}

    def crop_block_size(self, block_size: int) -> None:
        self.context_length = block_size


@MODELS.register("mlp", MLPSpec)
def build_mlp(spec: MLPSpec, *, vocab_size: int) -> MLP:
    if spec.init_from != "scratch":  # a run or checkpoint of this kind, rebuilt from its arch()
        return load_pretrained(spec.init_from, dropout=spec.dropout, block_size=spec.block_size)
    return MLP(spec, vocab_size)
