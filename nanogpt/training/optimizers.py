"""Optimizers, built from their own `[optimizer]` table and the model.

Weight decay goes on matrices only (the weights of Linear layers); biases, LayerNorm weights and
embeddings are not decayed, as GPT-2 and the seed do. With tied weights, wte and lm_head are one
parameter, counted once (as an embedding).

Muon (`build_muon`) splits the parameters by the roles the model declares (`param_roles`,
nanogpt.contracts.ROLES): torch's Muon on the hidden matrices (its update, computed for every matrix
of one shape at once: `StackedMuon`), torch's AdamW on the embeddings, the head and the rest, one
`MuonWithAdamW` as the runner sees it. Each of its groups carries its `role`
and its own `base_lr`, which the runner scales by the schedule's multiplier.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn
from torch.optim._muon import _adjust_lr

from nanogpt.config.tables import AdamWSpec, MuonSpec, SGDSpec
from nanogpt.errors import InputError
from nanogpt.contracts import ROLES


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed (2-D weights of Linear layers) and not decayed (everything else)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():  # parameters() yields a tied tensor once
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and id(p) not in embeddings else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _fused_kernel_available(model: nn.Module) -> bool:
    # torch has fused AdamW kernels for CUDA and (since 2.4) CPU; measured 3-4% faster per step
    # than the foreach default on the quickstart's CPU run, and the standard fast path on GPUs
    return next(model.parameters()).device.type in ("cuda", "cpu")


def build_adamw(spec: AdamWSpec, *, model: nn.Module) -> torch.optim.Optimizer:
    fused = _fused_kernel_available(model) if spec.fused is None else spec.fused
    return torch.optim.AdamW(
        param_groups(model, spec.weight_decay),
        lr=spec.lr,
        betas=tuple(spec.betas),
        eps=spec.eps,
        fused=fused or None,  # None lets torch pick its foreach implementation
    )


def build_sgd(spec: SGDSpec, *, model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        param_groups(model, spec.weight_decay),
        lr=spec.lr,
        momentum=spec.momentum,
        nesterov=spec.nesterov,
    )


class StackedMuon(torch.optim.Muon):
    """torch's Muon, with the Newton-Schulz iteration run once for every matrix of one shape, stacked.

    torch orthogonalises one matrix at a time; the blocks of a transformer repeat a few shapes, so
    stacking them turns n_layer small matrix products into one batched product (the GPT-2 speedrun
    batches them too). At the quickstart's size the iteration is most of a step's optimizer time and
    this measured 9.6 -> 5.8 ms a step on a 2-core EPYC. The arithmetic is torch's, in the same order
    and precision (bfloat16), so the updates equal torch.optim.Muon's (tests/training/test_muon.py
    holds them to it); the state (one momentum buffer a parameter) is torch's, so checkpoints of
    either load into the other.
    """

    @torch.no_grad()
    def step(self, closure: object = None) -> None:
        if closure is not None:
            raise ValueError("StackedMuon.step takes no closure")
        for group in self.param_groups:
            params: list[torch.Tensor] = []
            grads: list[torch.Tensor] = []
            buffers: list[torch.Tensor] = []
            self._init_group(group, params, grads, buffers)
            if not params:
                continue
            lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
            torch._foreach_lerp_(buffers, grads, 1 - momentum)
            updates = [g.lerp(b, momentum) for g, b in zip(grads, buffers)] if group["nesterov"] else buffers
            same_shape: dict[tuple, list[int]] = defaultdict(list)
            for i, p in enumerate(params):
                same_shape[(p.shape, p.dtype, p.device)].append(i)
            for indices in same_shape.values():
                stacked = torch.stack([updates[i] for i in indices])
                orthogonal = stacked_newton_schulz(stacked, group["ns_coefficients"], group["ns_steps"], group["eps"])
                for update, i in zip(orthogonal, indices):
                    p = params[i]
                    p.mul_(1 - lr * decay)
                    p.add_(update, alpha=-_adjust_lr(lr, group["adjust_lr_fn"], p.shape))


def stacked_newton_schulz(grads: torch.Tensor, coefficients: tuple[float, float, float], steps: int,
                          eps: float) -> torch.Tensor:
    """torch's quintic Newton-Schulz orthogonalisation (torch.optim._muon) of each matrix of a stack
    (batch, rows, cols), in bfloat16 as torch computes it."""
    a, b, c = coefficients
    x = grads.bfloat16()
    tall = x.size(-2) > x.size(-1)
    if tall:  # the Gram matrix on the smaller side, as torch does
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)  # spectral norm at most 1
    for _ in range(steps):
        gram = x @ x.mT
        gram_update = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.baddbmm(x, gram_update, x, beta=a)
    return x.mT if tall else x


class MuonWithAdamW(torch.optim.Optimizer):
    """torch's Muon and AdamW as one optimizer: one `step`, `zero_grad` and state dict.

    Its `param_groups` are the two parts' groups (Muon's first) and its `state` is theirs too: the
    parts keep no state of their own, so torch's own `state_dict` and `load_state_dict` save and
    restore both at once, and a gradient scaler or clipping sees every parameter.
    """

    def __init__(self, muon_groups: list[dict], adamw_groups: list[dict], *, betas: tuple[float, float], eps: float,
                 fused: bool | None):
        self.parts = (
            StackedMuon(muon_groups),
            torch.optim.AdamW(adamw_groups, betas=betas, eps=eps, fused=fused),
        )
        super().__init__([group for part in self.parts for group in part.param_groups], defaults={})
        self._share()

    def _share(self) -> None:
        start = 0
        for part in self.parts:
            part.param_groups = self.param_groups[start : start + len(part.param_groups)]
            part.state = self.state  # keyed by parameter, and the parts' parameters are disjoint
            start += len(part.param_groups)

    @torch.no_grad()
    def step(self, closure: object = None) -> None:
        if closure is not None:
            raise ValueError("MuonWithAdamW.step takes no closure")
        for part in self.parts:
            part.step()

    def load_state_dict(self, state_dict: dict) -> None:
        saved = [g.get("role") for g in state_dict.get("param_groups", ())] if isinstance(state_dict, dict) else []
        ours = [g["role"] for g in self.param_groups]
        if saved != ours:
            found = "no roles: another optimizer.kind saved it" if not any(saved) else f"the groups {saved}"
            raise ValueError(f"the saved optimizer state is not this Muon optimizer's (groups {ours}); it has {found}")
        # torch would take the saved groups' settings too; the spec's are what this run trains with
        # (the same on an exact resume; a --force resume continues with its change, as AdamW's lr does)
        configured = [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]
        super().load_state_dict(state_dict)
        for group, settings in zip(self.param_groups, configured):
            group.update(settings)
        self._share()  # torch made new group dicts and a new state


def build_muon(spec: MuonSpec, *, model: nn.Module) -> torch.optim.Optimizer:
    roles = _param_roles(model)
    by_role: dict[str, list[nn.Parameter]] = {role: [] for role in ROLES}
    for name, p in model.named_parameters():
        if p.requires_grad:
            by_role[roles[name]].append(p)
    if not by_role["hidden"]:
        raise InputError(f"optimizer.kind = 'muon': the model ({type(model).__name__}) has no hidden matrices for "
                         "Muon (its param_roles names none 'hidden'); use optimizer.kind = 'adamw'")
    muon_groups = [{"params": by_role["hidden"], "role": "hidden", "lr": spec.lr, "base_lr": spec.lr,
                    "weight_decay": spec.weight_decay, "momentum": spec.momentum, "nesterov": spec.nesterov,
                    "ns_steps": spec.ns_steps, "adjust_lr_fn": spec.adjust_lr_fn}]
    rates = {
        "embedding": spec.adam_lr if spec.embed_lr is None else spec.embed_lr,
        "head": spec.adam_lr if spec.head_lr is None else spec.head_lr,
        "other": spec.adam_lr,
    }
    decays = {"embedding": spec.adam_weight_decay, "head": spec.adam_weight_decay, "other": 0.0}
    adamw_groups = [
        {"params": by_role[role], "role": role, "lr": rates[role], "base_lr": rates[role], "weight_decay": decays[role]}
        for role in ("embedding", "head", "other") if by_role[role]
    ]
    fused = _fused_kernel_available(model)
    return MuonWithAdamW(muon_groups, adamw_groups, betas=tuple(spec.adam_betas), eps=spec.adam_eps,
                         fused=fused or None)


def _param_roles(model: nn.Module) -> dict[str, str]:
    """The model's own `param_roles()`, checked: every parameter exactly one known role, hidden ones 2-D."""
    declare = getattr(model, "param_roles", None)
    if declare is None:
        raise InputError(f"optimizer.kind = 'muon' needs the model to say which parameters are hidden matrices: "
                         f"{type(model).__name__} has no param_roles() (nanogpt.contracts.LanguageModel)")
    roles = declare()
    params = dict(model.named_parameters())
    problems = [f"{name!r} has no role" for name in params if name not in roles]
    problems += [f"{name!r} is no parameter of the model" for name in roles if name not in params]
    problems += [f"{name!r} has role {role!r} (known: {', '.join(ROLES)})" for name, role in roles.items() if role not in ROLES]
    problems += [f"{name!r} is hidden but has {params[name].ndim} dimensions (Muon takes 2-D matrices only)"
                 for name, role in roles.items() if role == "hidden" and name in params and params[name].ndim != 2]
    if problems:
        raise InputError(f"{type(model).__name__}.param_roles() does not fit its parameters: " + "; ".join(problems))
    return roles


def group_record(optimizer: torch.optim.Optimizer) -> list[dict] | None:
    """The manifest's `optimizer.groups` for an optimizer whose groups have roles: each group's role,
    parameter count and base rate; None for one whose groups have none."""
    if not all("role" in g for g in optimizer.param_groups):
        return None
    return [{"role": g["role"], "params": sum(p.numel() for p in g["params"]), "base_lr": g["base_lr"]}
            for g in optimizer.param_groups]
