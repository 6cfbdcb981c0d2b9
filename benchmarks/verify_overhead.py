"""What `gacclint verify` costs: a training script's run time under verify / on its own.

Three correct accumulation loops (k = 4), each run in this process on its own
(the script's own time) and under `verify_script` (the same script rewritten
and measured), best of `--runs` after one warm-up of each:

* small: a 3-8-1 MLP on 40 samples, 100 passes, SGD (the size of the fixtures);
* mlp: an MLP with 3.7 M parameters (1024-1664-1024-256), AdamW;
* embedding: an embedding of 200,000 x 64 rows (dense gradients) and a
  64-256 head, AdamW.

    python benchmarks/verify_overhead.py              # all three, 3 runs each
    python benchmarks/verify_overhead.py --runs 5 --cases embedding

It prints one line per case: the script's best time, the best time under
verify, their ratio (the goal is at most 2x), the median ratio of the
alternating pairs, and verify's verdict (every case must verify). Figures
only: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import runpy
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASES = {
    "small": """
        import torch
        from torch import nn
        from torch.utils.data import DataLoader, TensorDataset

        torch.manual_seed(0)
        features = torch.randn(40, 3)
        targets = features @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1
        loader = DataLoader(TensorDataset(features, targets), batch_size=4, shuffle=False)
        model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
        loss_fn = nn.MSELoss()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        k = 4

        for epoch in range(100):
            for i, (x, y) in enumerate(loader):
                loss = loss_fn(model(x), y)
                window = min(k, len(loader) - (i // k) * k)
                (loss / window).backward()
                if (i + 1) % k == 0 or i + 1 == len(loader):
                    optimizer.step()
                    optimizer.zero_grad()
    """,
    "mlp": """
        import torch
        from torch import nn

        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(1024, 1664), nn.ReLU(), nn.Linear(1664, 1024), nn.ReLU(),
                              nn.Linear(1024, 256))
        assert 3.6e6 < sum(p.numel() for p in model.parameters()) < 3.8e6
        batches = [(torch.randn(64, 1024), torch.randint(0, 256, (64,))) for _ in range(32)]
        loss_fn = nn.CrossEntropyLoss()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        k = 4

        for i, (x, y) in enumerate(batches):
            loss = loss_fn(model(x), y) / k
            loss.backward()
            if (i + 1) % k == 0:
                optimizer.step()
                optimizer.zero_grad()
    """,
    "embedding": """
        import torch
        from torch import nn

        torch.manual_seed(0)

        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = nn.Embedding(200_000, 64)
                self.head = nn.Linear(64, 256)

            def forward(self, ids):
                return self.head(self.embed(ids).mean(1))

        model = Model()
        batches = [(torch.randint(0, 200_000, (32, 16)), torch.randint(0, 256, (32,))) for _ in range(32)]
        loss_fn = nn.CrossEntropyLoss()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        k = 4

        for i, (ids, y) in enumerate(batches):
            loss = loss_fn(model(ids), y) / k
            loss.backward()
            if (i + 1) % k == 0:
                optimizer.step()
                optimizer.zero_grad()
    """,
}


def _plain(path: Path) -> float:
    start = time.perf_counter()
    runpy.run_path(str(path), run_name="__main__")
    return time.perf_counter() - start


def _verified(path: Path) -> tuple[float, str]:
    from gacclint.runtime import verify_script

    start = time.perf_counter()
    report = verify_script(path, device="cpu")
    return time.perf_counter() - start, report.verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: steadier figures on a shared machine)")
    options = parser.parse_args()
    import torch

    torch.set_num_threads(options.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {options.runs} runs of each, "
          "script and verify alternating")
    print(f"{'case':<10} {'script s':>9} {'verify s':>9} {'ratio':>6} {'median':>7}  verdict")
    with tempfile.TemporaryDirectory() as folder:
        for name in options.cases:
            path = Path(folder) / f"{name}.py"
            path.write_text(textwrap.dedent(CASES[name]))
            _plain(path), _verified(path)  # warm-up: lazy kernels, allocator
            plains, verifies, verdicts = [], [], set()
            for _ in range(options.runs):  # alternate, so a busy moment hits both
                plains.append(_plain(path))
                seconds, verdict = _verified(path)
                verifies.append(seconds)
                verdicts.add(verdict)
            plain, best = min(plains), min(verifies)
            median = statistics.median(v / p for p, v in zip(plains, verifies))
            print(f"{name:<10} {plain:>9.3f} {best:>9.3f} {best / plain:>5.2f}x {median:>6.2f}x  "
                  f"{', '.join(sorted(verdicts))}")


if __name__ == "__main__":
    main()
