"""Peak memory of Integrated Gradients with ``create_graph=True`` (what IG-NORM, IGR and AdvAAT backpropagate
through) as the batch and the number of steps grow, with and without ``checkpoint=True``.

Run: ``python -m benchmarks.bench_ig_memory [--json out.json]``. Each case runs in a fresh Python process
(``mnist_cnn`` on random MNIST-size inputs: IG, then ``backward`` of its l1 norm) and reports the growth of the
process's peak resident memory over the same process's state just before IG, in MiB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from ._common import print_table, write_json

CASES = ((32, 10), (32, 50), (128, 10), (128, 50))

_CHILD = r"""
import json, sys, torch
from attrobust.attributions import integrated_gradients
from attrobust.models import create
torch.set_num_threads(2)
def peak_kib():  # VmHWM: this process image's peak RSS (ru_maxrss would carry a bigger parent's peak over exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
batch, steps, checkpoint = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
torch.manual_seed(0)
model = create("mnist_cnn")
x, y = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
integrated_gradients(model, x[:2], y[:2], steps=2, create_graph=True, checkpoint=checkpoint).sum().backward()
before = peak_kib()
ig = integrated_gradients(model, x, y, steps=steps, create_graph=True, checkpoint=checkpoint)
ig.abs().sum().backward()
after = peak_kib()
print(json.dumps({"peak_growth_mib": (after - before) / 1024}))
"""


def measure(batch: int, steps: int, checkpoint: bool) -> float:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(batch), str(steps), "1" if checkpoint else "0"],
                         capture_output=True, text=True, check=True, timeout=600)  # fmt: skip
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_growth_mib"])


def run(json_path: str | None = None) -> dict:
    rows, out = [], {}
    for batch, steps in CASES:
        plain, ckpt = measure(batch, steps, False), measure(batch, steps, True)
        out[f"{batch}x{steps}"] = {"plain_mib": plain, "checkpoint_mib": ckpt}
        rows.append([batch, steps, plain, ckpt])
    print_table("IG with create_graph=True, mnist_cnn: peak memory growth (MiB)",
                ["batch", "steps", "default", "checkpoint=True"], rows)  # fmt: skip
    write_json(json_path, {"results": out})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    run(parser.parse_args(argv).json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
