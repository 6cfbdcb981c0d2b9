"""GA401-GA404 and GA501: the loop model they read, precision, and fixing together.

Several rules in one loop fix together in one `gacclint fix` run, to a
fixpoint; the result must equal fixing them one rule at a time, in any order.
The silent shapes below are the tricky correct loops of real code (written
here from their descriptions): sync turned off by any spelling, unscale_ under
the same switch as `scaler.step`, clipping under `sync_gradients`, opaque
guards, frameworks that manage the step.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import libcst as cst
import pytest

from gacclint.engine import lint_source
from gacclint.fixes.apply import fix_source
from gacclint.fixes.edits import MoveBefore, WrapInWith, apply_edits
from gacclint.loops.find import build_model
from gacclint.selection import Selection

HYGIENE = Path(__file__).resolve().parent.parent / "fixtures" / "step_hygiene"
CODES = ("GA401", "GA402", "GA403", "GA404", "GA501")


def codes(source: str, select: tuple[str, ...] = CODES) -> list[str]:
    _, findings = lint_source(textwrap.dedent(source).encode(), Selection(select=select))
    return [f.code for f in findings]


def model_of(source: str):
    return build_model(cst.parse_module(textwrap.dedent(source)))


# --------------------------------------------------------------------------
# Fixing together equals fixing one rule at a time
# --------------------------------------------------------------------------


def one_at_a_time(source: bytes, order: tuple[str, ...], also: set[str]) -> bytes:
    """Fix with one rule selected at a time, round after round, until nothing changes."""
    order = order + tuple(sorted(also - set(order)))
    for _ in range(10):
        before = source
        for code in order:
            source = fix_source(source, Selection(select=(code,)), unsafe=True).fixed
        if source == before:
            return source
    raise AssertionError("no fixpoint")


@pytest.mark.parametrize("name", ["combined_amp", "ga501_boundary_fixes"])
@pytest.mark.parametrize("order", [CODES, tuple(reversed(CODES)), ("GA202", "GA104", "GA203") + CODES],
                         ids=["forward", "reversed", "boundary-first"])
def test_fixing_together_equals_one_at_a_time(name, order):
    source = (HYGIENE / f"{name}.py").read_bytes()
    # Unsafe fixes too: GA401's is unsafe when the scheduler is built elsewhere.
    together = fix_source(source, Selection(), unsafe=True)
    assert together.converged and not together.dropped
    assert together.fixed == (HYGIENE / f"{name}.fixed.py").read_bytes()
    # Every rule whose fix ran together takes its turn (GA203 follows GA202).
    assert one_at_a_time(source, order, {f.code for f in together.applied}) == together.fixed
    assert not fix_source(together.fixed, Selection(), unsafe=True).changed


def test_combined_loop_reports_each_rule_once():
    source = (HYGIENE / "combined_amp.py").read_bytes()
    found = sorted(f.code for f in lint_source(source, Selection(select=CODES))[1])
    assert found == ["GA401", "GA402", "GA403", "GA404"]


def test_ga402_has_no_fix_until_ga403_moved_the_clip():
    source = (HYGIENE / "combined_amp.py").read_bytes()
    ga402 = next(f for f in lint_source(source, Selection(select=("GA402",)))[1])
    assert ga402.fix is None  # an unscale_ per micro-batch would raise on the second one
    moved = fix_source(source, Selection(select=("GA403",))).fixed
    ga402 = next(f for f in lint_source(moved, Selection(select=("GA402",)))[1])
    assert ga402.fix is not None


# --------------------------------------------------------------------------
# The loop model
# --------------------------------------------------------------------------


def test_scalers_in_use():
    model = model_of("""
        amp_scaler = torch.cuda.amp.GradScaler(enabled=args.fp16)
        off_scaler = torch.cuda.amp.GradScaler(enabled=False)
        for x in loader:
            amp_scaler.scale(model(x)).backward()
            off_scaler.scale(model(x)).backward()
            amp_scaler.step(opt)
            off_scaler.step(opt)
            self.scaler.step(opt)
            opt.zero_grad()
    """)
    # A scaler built elsewhere (`self.scaler`, a parameter) counts as in use.
    assert model.loops[0].scalers_in_use == {"amp_scaler", "self.scaler"}


def test_ddp_wraps_self_model_conditional_and_origin():
    model = model_of("""
        from torch.nn.parallel import DistributedDataParallel as DDP
        from apex.parallel import DistributedDataParallel

        class Trainer:
            def __init__(self, model, args):
                self.model = DDP(model)
                if args.apex:
                    self.other = DistributedDataParallel(model)

            def fit(self, loader):
                for i, x in enumerate(loader):
                    self.model(x).backward()
                    self.other(x).backward()
                    if (i + 1) % 4 == 0:
                        self.opt.step()
                        self.opt.zero_grad()
    """)
    loop = model.loops[0]
    wraps = {w.name: w for w in loop.ddp}
    assert wraps["self.model"].torch and not wraps["self.model"].conditional
    assert not wraps["self.other"].torch and wraps["self.other"].conditional
    assert loop.ddp[0].name == "self.model" and len(loop.ddp_forwards) == 1
    assert not loop.sync_control


@pytest.mark.parametrize("spelling", [
    "ctx = model.no_sync if not last else contextlib.nullcontext",
    "model.require_backward_grad_sync = last",
    "model.disable_allreduce()",
    "cm = fabric.no_backward_sync(model, enabled=not last)",
])
def test_sync_control_spellings(spelling):
    model = model_of(f"""
        model = torch.nn.parallel.DistributedDataParallel(model)
        for i, x in enumerate(loader):
            last = (i + 1) % k == 0
            {spelling}
            model(x).backward()
            if (i + 1) % k == 0:
                opt.step()
                opt.zero_grad()
    """)
    assert model.loops[0].sync_control


def test_sync_control_in_a_called_helper():
    source = """
        class Task:
            def maybe_no_sync(self, last):
                return contextlib.nullcontext() if last else self.model.no_sync()

            def train(self, loader):
                self.model = torch.nn.parallel.DistributedDataParallel(self.net)
                for i, x in enumerate(loader):
                    with self.maybe_no_sync((i + 1) % self.k == 0):
                        self.model(x).backward()
                    if (i + 1) % self.k == 0:
                        self.opt.step()
                        self.opt.zero_grad()
    """
    assert model_of(source).loops[0].sync_control
    assert codes(source) == []


def test_ddp_wrap_reaches_a_function_through_its_only_call_site():
    # RULES.md, *facts along calls*: every call site passes a DDP-wrapped model.
    assert "GA501" in codes("""
        def train(model, loader):
            for i, x in enumerate(loader):
                (model(x) / k).backward()
                if (i + 1) % k == 0 or i + 1 == len(loader):
                    opt.step()
                    opt.zero_grad()

        def main():
            model = torch.nn.parallel.DistributedDataParallel(net)
            train(model, loader)
    """)


def test_ddp_wrap_is_unknown_when_call_sites_disagree_or_wrap_after_the_call():
    assert "GA501" not in codes("""
        def train(model, loader):
            for i, x in enumerate(loader):
                (model(x) / k).backward()
                if (i + 1) % k == 0 or i + 1 == len(loader):
                    opt.step()
                    opt.zero_grad()

        def main():
            model = torch.nn.parallel.DistributedDataParallel(net)
            train(model, loader)
            train(net, loader)
    """)
    assert "GA501" not in codes("""
        def train(model, loader):
            for i, x in enumerate(loader):
                (model(x) / k).backward()
                if (i + 1) % k == 0 or i + 1 == len(loader):
                    opt.step()
                    opt.zero_grad()

        def main():
            train(model, loader)
            model = torch.nn.parallel.DistributedDataParallel(net)
    """)


def test_step_helper_is_modelled_apart_from_loops():
    model = model_of("""
        def train_step(self, batch):
            loss = self.model(batch)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
    """)
    assert model.loops == [] and len(model.step_helpers) == 1
    # Rules other than GA402 never see a step helper (it has no clear: no GA101).
    assert codes("""
        def train_step(self, batch):
            loss = self.model(batch)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
    """, select=("GA",)) == []


# --------------------------------------------------------------------------
# Precision: correct loops that stay silent
# --------------------------------------------------------------------------

SILENT = {
    "nanogpt-window": """
        scaler = torch.cuda.amp.GradScaler(enabled=(dtype == 'float16'))
        model = DDP(model, device_ids=[ddp_local_rank])
        while True:
            for micro_step in range(gradient_accumulation_steps):
                if ddp:
                    model.require_backward_grad_sync = (micro_step == gradient_accumulation_steps - 1)
                with ctx:
                    logits, loss = model(X, Y)
                    loss = loss / gradient_accumulation_steps
                scaler.scale(loss).backward()
            if grad_clip != 0.0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
    """,
    "nullcontext-switch": """
        model = torch.nn.parallel.DistributedDataParallel(model)
        for batch_samples in batches:
            for i, batch in enumerate(batch_samples):
                ctx = model.no_sync if i < len(batch_samples) - 1 else contextlib.nullcontext
                with ctx():
                    loss = model(**batch).loss / len(batch_samples)
                    loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
    """,
    "fp16-switch-unscale": """
        for step, batch in enumerate(loader):
            loss = model(**batch)[0]
            if args.gradient_accumulation_steps > 1:
                loss = loss / args.gradient_accumulation_steps
            if args.fp16:
                scaler.scale(loss).backward()
            else:
                loss.backward()
            if (step + 1) % args.gradient_accumulation_steps == 0 or step + 1 == len(loader):
                if args.fp16:
                    scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                if args.fp16:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                model.zero_grad()
    """,
    "accelerate-sync-gradients": """
        for step, batch in enumerate(train_dataloader):
            with accelerator.accumulate(unet):
                loss = compute(batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(unet.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
    """,
    "accelerate-clip-every-batch": """
        for batch in loader:
            loss = model(**batch).loss
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
    """,
    "apex-allreduce-off": """
        model = DDP(model)
        for step, batch in enumerate(loader):
            loss = model(batch) / args.gradient_accumulation_steps
            if args.local_rank != -1:
                model.disable_allreduce()
                if (step + 1) % args.gradient_accumulation_steps == 0:
                    model.enable_allreduce()
            loss.backward()
            if (step + 1) % args.gradient_accumulation_steps == 0 or step + 1 == len(loader):
                optimizer.step()
                optimizer.zero_grad()
    """,
    "fabric-no-backward-sync": """
        model = DDP(model)
        for i, batch in enumerate(loader):
            is_accumulating = (i + 1) % k != 0
            with fabric.no_backward_sync(model, enabled=is_accumulating):
                loss = model(batch) / k
                fabric.backward(loss)
            if not is_accumulating:
                optimizer.step()
                optimizer.zero_grad()
    """,
    "fsdp": """
        model = FSDP(model)
        for i, batch in enumerate(loader):
            loss = model(batch) / k
            loss.backward()
            if (i + 1) % k == 0 or i + 1 == len(loader):
                optimizer.step()
                optimizer.zero_grad()
    """,
    "deepspeed-engine": """
        model = DDP(model)
        model, optimizer, _, _ = deepspeed.initialize(model=model, config=cfg)
        for step, batch in enumerate(loader):
            loss = model(batch)
            model.backward(loss)
            model.step()
            lr_scheduler.step()
    """,
    "ddp-without-accumulation": """
        model = torch.nn.parallel.DistributedDataParallel(model)
        for x, y in loader:
            loss = loss_fn(model(x), y)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad()
    """,
    "opaque-nominal-batch-guard": """
        for i, (imgs, targets) in pbar:
            ni = i + nb * epoch
            with torch.cuda.amp.autocast(amp):
                loss, items = compute_loss(model(imgs), targets)
            scaler.scale(loss).backward()
            if ni - last_opt_step >= accumulate:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
                last_opt_step = ni
            scheduler.step()
    """,
    "scheduler-with-position": """
        for i, (x, y) in enumerate(loader):
            loss = loss_fn(model(x), y) / k
            loss.backward()
            scheduler.step(epoch + i / iters)
            diffusion_scheduler.step(noise_pred, t, latents)
            if (i + 1) % k == 0 or (i + 1) == len(loader):
                optimizer.step()
                optimizer.zero_grad()
    """,
    "periodic-update": """
        for i, (x, _) in enumerate(loader):
            d_loss = critic_loss(x)
            d_loss.backward()
            optimizer_D.step()
            optimizer_D.zero_grad()
            if i % n_critic == 0:
                g_loss = generator_loss(x)
                g_loss.backward()
                torch.nn.utils.clip_grad_norm_(generator.parameters(), 1.0)
                optimizer_G.step()
                scheduler_G.step()
                optimizer_G.zero_grad()
    """,
    "scaler-disabled": """
        scaler = torch.cuda.amp.GradScaler(enabled=False)
        for x, y in loader:
            scaler.scale(loss_fn(model(x), y)).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
    """,
    "unscale-under-own-guard": """
        for step, batch in zip(pbar, iterator):
            with torch.autocast("cuda", enabled=use_amp):
                loss = model(**batch).loss
            grad_scaler.scale(loss).backward()
            if grad_norm_clip:
                grad_scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_norm_clip)
            grad_scaler.step(optimizer)
            grad_scaler.update()
            lr_scheduler.step()
            optimizer.zero_grad()
    """,
    "resume-continue-then-accumulate": """
        for step, batch in enumerate(epoch_iterator):
            if steps_trained_in_current_epoch > 0:
                steps_trained_in_current_epoch -= 1
                continue
            loss = model(**batch)[0] / args.gradient_accumulation_steps
            loss.backward()
            if (step + 1) % args.gradient_accumulation_steps == 0 or step + 1 == len(epoch_iterator):
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                model.zero_grad()
    """,
}


@pytest.mark.parametrize("source", list(SILENT.values()), ids=list(SILENT))
def test_correct_loops_stay_silent(source):
    assert codes(source) == []


# --------------------------------------------------------------------------
# Edits the fixes use
# --------------------------------------------------------------------------


def test_wrap_in_with_keeps_comments_and_blank_lines():
    source = textwrap.dedent("""\
        for x in loader:
            prepare(x)

            # the forward
            out = model(x)
            out.backward()  # all-reduce here
            step()
    """)
    module = cst.parse_module(source)
    body = module.body[0].body.body
    fixed = apply_edits(module, [WrapInWith((body[1], body[2]), "ctx()", "flag = True")]).code
    assert fixed == textwrap.dedent("""\
        for x in loader:
            prepare(x)

            flag = True
            with ctx():
                # the forward
                out = model(x)
                out.backward()  # all-reduce here
            step()
    """)


def test_move_before_keeps_comment_lines():
    source = "if go:\n    step()\n# bound it\nclip()\n"
    module = cst.parse_module(source)
    step = module.body[0].body.body[0]
    fixed = apply_edits(module, [MoveBefore(module.body[1], step)]).code
    assert fixed == "if go:\n    # bound it\n    clip()\n    step()\n"


def test_unscale_inside_a_helper_of_the_module_counts():
    assert codes("""
        class Trainer:
            def _unscale(self):
                self.scaler.unscale_(self.optimizer)

            def train_step(self, batch):
                loss = self.model(batch)
                self.scaler.scale(loss).backward()
                self._unscale()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                self.scaler.step(self.optimizer)
                self.scaler.update()
    """) == []


def test_ddp_model_used_only_without_grad_or_after_backward_is_not_the_trained_one():
    assert codes("""
        teacher = torch.nn.parallel.DistributedDataParallel(teacher)
        for i, (x, y) in enumerate(loader):
            with torch.no_grad():
                soft = teacher(x)
            loss = distill(student(x), soft) / k
            loss.backward()
            if (i + 1) % k == 0:
                optimizer.step()
                optimizer.zero_grad()
                evaluate(teacher)
    """) == []
