"""nanoGPT as its README and model.py describe it today: the second baseline of the GPU check.

Written here from nanoGPT's published description (not copied), to measure the product against
the recipe its users run now rather than against the January 2023 seed:

- attention through `F.scaled_dot_product_attention(..., is_causal=True)` (flash on a GPU), no mask
  buffer; nn.GELU; LayerNorm and Linear biases optional (the training config turns them off);
- the token table tied to the output head, the vocabulary padded to 50304 (a multiple of 64);
- GPT-2 initialisation (std 0.02, residual projections scaled by 1/sqrt(2 * n_layer));
- AdamW with decay on the 2-D weights only, `fused=True` on CUDA;
- the training loop: batches drawn from a memory map (re-opened per batch), pinned and copied
  with non_blocking; torch.compile; gradient accumulation with the all-reduce only on the last
  micro-step; a GradScaler that is off in bf16; grad-norm clipping at 1.0; the loss read back
  (`.item()`) only every log_interval iterations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class TodayConfig:
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257, padded to a multiple of 64
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = False


class TodayAttention(nn.Module):
    def __init__(self, c: TodayConfig):
        super().__init__()
        self.c_attn = nn.Linear(c.n_embd, 3 * c.n_embd, bias=c.bias)
        self.c_proj = nn.Linear(c.n_embd, c.n_embd, bias=c.bias)
        self.n_head, self.dropout = c.n_head, c.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class TodayBlock(nn.Module):
    def __init__(self, c: TodayConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.attn = TodayAttention(c)
        self.ln_2 = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.mlp = nn.Sequential(
            nn.Linear(c.n_embd, 4 * c.n_embd, bias=c.bias), nn.GELU(), nn.Linear(4 * c.n_embd, c.n_embd, bias=c.bias)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TodayGPT(nn.Module):
    def __init__(self, c: TodayConfig):
        super().__init__()
        self.config = c
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.block_size, c.n_embd)
        self.h = nn.ModuleList(TodayBlock(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight  # tied
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * c.n_layer) if name.endswith(("c_proj.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(p, mean=0.0, std=std)
            else:
                nn.init.zeros_(p) if name.endswith("bias") else nn.init.ones_(p)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)

    def non_embedding_params(self) -> int:
        """nanoGPT's get_num_params(): every parameter but the position table (the tied table counts once)."""
        return sum(p.numel() for p in self.parameters()) - self.wpe.weight.numel()

    def configure_optimizer(self, lr: float, weight_decay: float, device_type: str) -> torch.optim.AdamW:
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=device_type == "cuda")


class TodayLoop:
    """nanoGPT's train.py loop around TodayGPT, one iteration per call: `grad_accum` micro-steps of `batch`."""

    def __init__(self, model_sizes: dict, device: torch.device, batch: int, grad_accum: int, compile: bool, log_interval: int = 10):
        torch.manual_seed(1337)
        cfg = TodayConfig(**{k: v for k, v in model_sizes.items() if k in ("n_layer", "n_head", "n_embd", "block_size")})
        self.device, self.batch, self.accum, self.T = device, batch, grad_accum, cfg.block_size
        self.raw = TodayGPT(cfg).to(device)
        self.optimizer = self.raw.configure_optimizer(6e-4, 0.1, device.type)
        self.model = torch.compile(self.raw) if compile else self.raw
        self.autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        self.scaler = torch.amp.GradScaler(device.type, enabled=False)  # bf16 needs none
        self.log_interval = log_interval
        self.get_batch = self._synthetic()

    def _synthetic(self):
        x = torch.randint(50257, (self.batch, self.T), device=self.device)
        y = torch.randint(50257, (self.batch, self.T), device=self.device)
        return lambda: (x, y)

    def use_memmap(self, path: str) -> None:
        """train.py's get_batch: a fresh np.memmap per batch (it leaks otherwise), pinned, non_blocking."""
        T, batch, device = self.T, self.batch, self.device

        def get_batch() -> tuple[torch.Tensor, torch.Tensor]:
            data = np.memmap(path, dtype=np.uint16, mode="r")
            ix = torch.randint(len(data) - T, (batch,))
            x = torch.stack([torch.from_numpy(data[i:i + T].astype(np.int64)) for i in ix])
            y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + T].astype(np.int64)) for i in ix])
            if device.type == "cuda":
                return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
            return x.to(device), y.to(device)

        self.get_batch = get_batch

    def flops_per_token(self) -> int:
        c = self.raw.config
        return 6 * self.raw.non_embedding_params() + 12 * c.n_layer * c.n_embd * c.block_size

    def __call__(self, it: int) -> None:
        X, Y = self.get_batch()
        for micro in range(self.accum):
            with self.autocast:
                loss = self.model(X, Y) / self.accum
            X, Y = self.get_batch()  # the next batch is fetched while the GPU works on this one
            self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.raw.parameters(), 1.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if it % self.log_interval == 0:
            loss.item()  # the one host sync, on logging iterations
