"""The writer's CPU copy of the state (`snapshot`): one arena of the state's summed size carved into
views, page-locked as exactly those bytes where the state is on a GPU, reused by later saves."""

from __future__ import annotations

import gc

import torch

from nanogpt.checkpoints import files
from nanogpt.models.gpt import GPT, GPTConfig


def trained_state() -> dict:
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=24, block_size=8, vocab_size=40))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 40, (2, 8))
    model(x, x)[1].backward()
    optimizer.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "iter": 3}


def tensors(obj) -> list[torch.Tensor]:
    return list(files._tensors_of(obj))


def distinct_bytes(state: dict) -> int:
    """Bytes of the state's distinct tensors (a tied weight once), each rounded up to the arena's alignment."""
    seen = {(t.data_ptr(), t.shape, t.dtype): t for t in tensors(state)}
    return sum(files._aligned(t.numel() * t.element_size()) for t in seen.values())


def test_a_snapshot_is_one_arena_of_the_states_bytes():
    state = trained_state()
    copy = files.snapshot(state)
    storages = {t.untyped_storage().data_ptr() for t in tensors(copy)}
    assert len(storages) == 1
    assert tensors(copy)[0].untyped_storage().nbytes() == distinct_bytes(state)
    for a, b in zip(tensors(state), tensors(copy)):
        assert torch.equal(a, b) and a.dtype == b.dtype and a.data_ptr() != b.data_ptr()
    # GPT ties its head to its embedding: the copy keeps them one tensor
    assert copy["model"]["lm_head.weight"].data_ptr() == copy["model"]["transformer.wte.weight"].data_ptr()
    assert copy["iter"] == 3 and copy["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]

    # a later save writes into the same arena, and holds the new values
    with torch.no_grad():
        for t in tensors(state["model"]):
            t.add_(1)
    again = files.snapshot(state, reuse=copy)
    assert [t.data_ptr() for t in tensors(again)] == [t.data_ptr() for t in tensors(copy)]
    assert all(torch.equal(a, b) for a, b in zip(tensors(state), tensors(again)))


def test_a_pinned_snapshot_registers_exactly_its_bytes_once(monkeypatch):
    """Where the state is on a GPU the arena is page-locked: one registration of exactly the summed
    bytes (not a power of two per tensor), undone once the snapshot is let go; `PINNED` reports it.
    (On this CPU the registration is recorded, not made.)"""
    registered, unregistered = [], []
    monkeypatch.setattr(files, "_register_host_memory", lambda ptr, n: registered.append((ptr, n)))
    monkeypatch.setattr(files, "_unregister_host_memory", lambda ptr: unregistered.append(ptr))
    state = trained_state()
    copy = files.snapshot(state, pin=True)
    arena_ptr = tensors(copy)[0].untyped_storage().data_ptr()
    assert registered == [(arena_ptr, distinct_bytes(state))]
    assert files.PINNED.nbytes == distinct_bytes(state)
    assert unregistered == []
    del copy
    gc.collect()
    assert unregistered == [arena_ptr] and files.PINNED.nbytes == 0


def test_a_cpu_state_is_not_pinned(monkeypatch):
    registered = []
    monkeypatch.setattr(files, "_register_host_memory", lambda ptr, n: registered.append((ptr, n)))
    files.snapshot(trained_state())
    assert registered == [] and files.PINNED.nbytes == 0
