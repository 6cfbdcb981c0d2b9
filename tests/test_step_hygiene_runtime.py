"""The step-hygiene fixtures really are bugs, and their fixes really are fixes.

Each script in ``fixtures/step_hygiene/`` with a ``.fixed.py`` twin is run on
CPU, in this process, with a recorder that logs, in order, every optimizer
step, ``GradScaler.unscale_``/``update`` call, gradient clip (and whether the
gradients it saw were unscaled), and DDP all-reduce (a comm hook). The fixed
scripts then show the once-per-step shape the rules ask for: the scheduler
advances once per optimizer step, clipping runs once per window on unscaled
gradients, ``scaler.update`` once per ``scaler.step``, DDP all-reduces once
per step with the same gradients as before.
"""

from __future__ import annotations

import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import torch.distributed as dist  # noqa: E402
from torch.optim.optimizer import register_optimizer_step_pre_hook  # noqa: E402

HYGIENE = Path(__file__).resolve().parent.parent / "fixtures" / "step_hygiene"
MICRO_BATCHES = 2 * 12  # every fixture: 2 epochs of 48 samples in batches of 4
K = 4  # every accumulating fixture's accumulation_steps


@dataclass
class Log:
    """What a script did, in order: ("step",), ("unscale",), ("update",),
    ("clip", unscaled), ("allreduce",); plus the gradients at each step."""

    events: list[tuple] = field(default_factory=list)
    grads: list[list[torch.Tensor]] = field(default_factory=list)
    globals: dict = field(default_factory=dict)

    def kinds(self) -> list[str]:
        return [event[0] for event in self.events]

    def windows(self) -> list[list[tuple]]:
        """The events between consecutive optimizer steps, each window ending with its step
        (`scaler.update()` calls left out: `updates_follow_steps` checks them)."""
        found, current = [], []
        for event in self.events:
            if event[0] == "update":
                continue
            current.append(event)
            if event[0] == "step":
                found.append(current)
                current = []
        return found

    def count(self, kind: str) -> int:
        return self.kinds().count(kind)

    def updates_follow_steps(self) -> bool:
        """`scaler.update()` exactly once after each step, and nowhere else."""
        kinds = self.kinds()
        updates = [i for i, kind in enumerate(kinds) if kind == "update"]
        steps = [i for i, kind in enumerate(kinds) if kind == "step"]
        return updates == [i + 1 for i in steps]


# The originals, taken once: a second run in one test must not wrap the wrappers.
original_unscale = torch.amp.GradScaler.unscale_
original_update = torch.amp.GradScaler.update
original_clip = torch.nn.utils.clip_grad_norm_
original_ddp_init = torch.nn.parallel.DistributedDataParallel.__init__


def run(script: Path, monkeypatch: pytest.MonkeyPatch) -> Log:
    """Run a fixture as `__main__` with the recorder installed (removed afterwards)."""
    log = Log()
    pending_unscale = [False]  # an unscale_ since the last update: the gradients are unscaled

    def unscale_(self, optimizer):
        log.events.append(("unscale",))
        pending_unscale[0] = True
        return original_unscale(self, optimizer)

    def update(self, new_scale=None):
        log.events.append(("update",))
        pending_unscale[0] = False
        return original_update(self, new_scale)

    def clip_grad_norm_(parameters, *args, **kwargs):
        log.events.append(("clip", pending_unscale[0]))
        return original_clip(parameters, *args, **kwargs)

    def ddp_init(self, *args, **kwargs):
        original_ddp_init(self, *args, **kwargs)

        def counting_hook(state, bucket):
            log.events.append(("allreduce",))
            future = torch.futures.Future()
            tensor = bucket.buffer()
            dist.all_reduce(tensor)
            future.set_result(tensor / dist.get_world_size())
            return future

        self.register_comm_hook(None, counting_hook)

    def before_step(optimizer, args, kwargs):
        log.events.append(("step",))
        log.grads.append([p.grad.detach().clone() for group in optimizer.param_groups for p in group["params"]])

    monkeypatch.setattr(torch.amp.GradScaler, "unscale_", unscale_)
    monkeypatch.setattr(torch.amp.GradScaler, "update", update)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_grad_norm_)
    monkeypatch.setattr(torch.nn.parallel.DistributedDataParallel, "__init__", ddp_init)
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # loopback only
    handle = register_optimizer_step_pre_hook(before_step)
    try:
        log.globals = runpy.run_path(str(script), run_name="__main__")
    finally:
        handle.remove()
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return log


def pair(name: str) -> tuple[Path, Path]:
    return HYGIENE / f"{name}.py", HYGIENE / f"{name}.fixed.py"


# --------------------------------------------------------------------------
# GA401: the scheduler advances once per optimizer step
# --------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_ga401_fixed_scheduler_advances_once_per_step(monkeypatch):
    buggy, fixed = pair("ga401_scheduler")
    before = run(buggy, monkeypatch)
    assert before.count("step") == MICRO_BATCHES // K
    assert before.globals["scheduler"].last_epoch == MICRO_BATCHES  # k times too fast
    after = run(fixed, monkeypatch)
    assert after.count("step") == MICRO_BATCHES // K
    assert after.globals["scheduler"].last_epoch == after.count("step")


# --------------------------------------------------------------------------
# GA402: the clip sees unscaled gradients
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ga402_clip_before_unscale", "ga402_step_helper"])
def test_ga402_fixed_clip_sees_unscaled_gradients(monkeypatch, name):
    buggy, fixed = pair(name)
    before = run(buggy, monkeypatch)
    clips = [e for e in before.events if e[0] == "clip"]
    assert clips and not any(unscaled for _, unscaled in clips)  # every clip saw scaled gradients
    after = run(fixed, monkeypatch)
    assert after.count("step") == MICRO_BATCHES
    for window in after.windows():
        assert [e[0] for e in window] == ["unscale", "clip", "step"], window
        assert window[1] == ("clip", True)
    assert after.updates_follow_steps(), after.kinds()


# --------------------------------------------------------------------------
# GA403: one clip per window, on the window's unscaled gradient
# --------------------------------------------------------------------------


def test_ga403_fixed_clips_once_per_window(monkeypatch):
    buggy, fixed = pair("ga403_clip_per_micro_batch")
    before = run(buggy, monkeypatch)
    assert before.count("clip") == MICRO_BATCHES  # every partial sum, still scaled
    assert not any(e[1] for e in before.events if e[0] == "clip")
    after = run(fixed, monkeypatch)
    assert after.count("step") == MICRO_BATCHES // K
    for window in after.windows():
        assert [e[0] for e in window] == ["unscale", "clip", "step"], window
        assert window[1] == ("clip", True)
    assert after.updates_follow_steps(), after.kinds()


# --------------------------------------------------------------------------
# GA404: scaler.update once per scaler.step
# --------------------------------------------------------------------------


def test_ga404_fixed_updates_once_per_step(monkeypatch):
    buggy, fixed = pair("ga404_scaler_update")
    # An enabled scaler refuses an update with no step since the last one.
    with pytest.raises(AssertionError, match="No inf checks"):
        run(buggy, monkeypatch)
    after = run(fixed, monkeypatch)
    assert after.count("step") == MICRO_BATCHES // K
    assert after.updates_follow_steps(), after.kinds()
    for window in after.windows():
        # scaler.step unscales by itself right before stepping
        assert [e[0] for e in window] == ["unscale", "step"], window


# --------------------------------------------------------------------------
# All four in one loop
# --------------------------------------------------------------------------


def test_combined_fix_gives_the_step_block_order(monkeypatch):
    _, fixed = pair("combined_amp")
    after = run(fixed, monkeypatch)
    assert after.count("step") == MICRO_BATCHES // K
    for window in after.windows():
        assert [e[0] for e in window] == ["unscale", "clip", "step"], window
        assert window[1] == ("clip", True)
    assert after.updates_follow_steps(), after.kinds()
    assert after.globals["scheduler"].last_epoch == after.count("step")


# --------------------------------------------------------------------------
# GA501: one all-reduce per optimizer step, gradients unchanged
# --------------------------------------------------------------------------


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_ga501_fixed_all_reduces_once_per_step(monkeypatch):
    buggy, fixed = pair("ga501_ddp")
    before = run(buggy, monkeypatch)
    assert before.count("step") == MICRO_BATCHES // K
    for window in before.windows():
        assert [e[0] for e in window].count("allreduce") == K
    after = run(fixed, monkeypatch)
    assert after.count("step") == MICRO_BATCHES // K
    for window in after.windows():
        assert [e[0] for e in window] == ["allreduce", "step"], window
    # The boundary micro-batch all-reduces the whole window: same gradients.
    assert len(before.grads) == len(after.grads)
    for grads_before, grads_after in zip(before.grads, after.grads):
        for g_before, g_after in zip(grads_before, grads_after):
            torch.testing.assert_close(g_after, g_before, rtol=1e-6, atol=1e-7)
    for p_before, p_after in zip(before.globals["model"].parameters(), after.globals["model"].parameters()):
        torch.testing.assert_close(p_after, p_before, rtol=1e-6, atol=1e-7)
