"""Neuron conductance and internal influence: one integration for every layer (what coar.baselines runs)
against Captum's LayerConductance / InternalInfluence called once per layer, on the default preset's models.

For every distinct convnet/ViT/MLP of a preset (random weights, the setup's number of examples, one thread by
default): seconds per call of each path, median of --reps interleaved repetitions, their ratio, and the
largest difference between the two paths' scores relative to the largest score.

    python benchmarks/bench_baselines.py --preset config/config.yaml --setups A B C --reps 3
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import device_name  # noqa: E402
from bench_sampling import preset_models  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="config/config.yaml", help="workflow config whose setups' models are timed")
    ap.add_argument("--setups", nargs="+", default=None, help="only these setups")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions (median reported)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-steps", type=int, default=20, help="integration steps (the workflow's default: 20)")
    ap.add_argument("--examples", type=int, default=None, help="examples per call (default: the setup's)")
    a = ap.parse_args(argv)
    from coar.baselines import _captum_layer_scores
    from coar.components import component_set
    from coar.outputs import get_output_fn
    from coar.paper.models import build_model

    torch.set_num_threads(a.threads)
    print(f"device: {device_name(torch.device('cpu'))}, {a.threads} thread(s), n_steps {a.n_steps}")
    print("| setup | model | groups | n | method | per layer (Captum), s | one integration, s | speed-up | "
          "max rel. difference |")
    print("|---|---|---|---|---|---|---|---|---|")
    fn = get_output_fn("margin")
    for m in preset_models(a.preset):
        if (a.setups and m["setup"] not in a.setups) or m["length"] is not None:
            continue  # language models: NC/II need continuous inputs
        torch.manual_seed(0)
        model = build_model(m["model"], num_classes=m["num_classes"], in_channels=m["in_channels"],
                            image_size=m["image_size"]).eval()
        cset = component_set(model, m["model"])
        n = a.examples or m["n"]
        x = torch.randn(n, m["in_channels"], m["image_size"], m["image_size"])
        y = torch.randint(0, m["num_classes"], (n,))
        for kind in ("nc", "ii"):
            times: dict = {True: [], False: []}
            out = {}
            for _ in range(a.reps):
                for per_layer in (True, False):
                    t = time.perf_counter()
                    out[per_layer] = _captum_layer_scores(kind, model, cset, x, y, fn, a.n_steps, 64, None,
                                                          "gausslegendre", False, None, per_layer=per_layer).weights
                    times[per_layer].append(time.perf_counter() - t)
            old, new = statistics.median(times[True]), statistics.median(times[False])
            diff = float(abs(out[True] - out[False]).max() / max(abs(out[True]).max(), 1e-30))
            print(f"| {m['setup']} | {m['model']} | {len(cset.groups)} | {n} | {kind} | {old:.2f} | {new:.2f} | "
                  f"**{old / new:.1f}x** | {diff:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
