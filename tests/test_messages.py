"""What a finding says, where the message itself carries the evidence a user acts on."""

from __future__ import annotations

import textwrap

from gacclint.engine import lint_source
from gacclint.selection import Selection


def _messages(code: str, rule: str) -> list[str]:
    _, findings = lint_source(textwrap.dedent(code).encode(), Selection())
    return [f.message for f in findings if f.code == rule]


def test_off_by_one_with_a_counter_restarting_each_pass_counts_the_tail_as_lost() -> None:
    messages = _messages("""
        def run(model, optimizer, loader, epochs, k):
            for _ in range(epochs):
                for step, batch in enumerate(loader):
                    (model(batch).pow(2).mean() / k).backward()
                    if step % k == 0:
                        optimizer.step()
                        optimizer.zero_grad()
    """, "GA104")
    assert messages == ["`step % k` is off by one: the first window holds one micro-batch and every later one is "
                        "shifted (with k=4 and 15 micro-batches it runs after micro-batches 1, 5, 9, 13: windows of "
                        "1, 4, 4, 4, and the last 2 are never stepped)"]


def test_off_by_one_with_a_counter_carried_across_passes_says_windows_straddle_them() -> None:
    # The micro-batches after a pass's last step open the next pass's first window: they are
    # stepped, and only the run's first window is short.
    messages = _messages("""
        def run(model, optimizer, loader, epochs, k):
            step = 0
            for _ in range(epochs):
                for batch in loader:
                    (model(batch).pow(2).mean() / k).backward()
                    if step % k == 0:
                        optimizer.step()
                        optimizer.zero_grad()
                    step += 1
    """, "GA104")
    assert messages == ["`step % k` is off by one: the first window of the run holds one micro-batch and every later "
                        "one is shifted (with k=4 and 15 micro-batches it runs after micro-batches 1, 5, 9, 13: "
                        "windows of 1, 4, 4, 4 in the first pass, and later windows straddle passes)"]
