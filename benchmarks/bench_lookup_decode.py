"""Benchmark: one image's description with and without prompt-lookup decoding (issue #14's one-image target).

    python benchmarks/bench_lookup_decode.py [--profile offline] [--images 24] [--out results/bench_lookup_decode.json]

With the profile's default trained model (``samllava train --profile P`` first) and a support of K = 4
normal images, every test image of a generated synthetic data set is diagnosed alone
(``diagnose_with_support``, 40-token answer) twice: with :attr:`Describer.lookup_draft` 0 (``generate``, one
pass per token) and with the default draft (:mod:`samllava.describe.lookup_decode`). Reports the median time
per image of each, their ratio, and how many descriptions (the whole generated text) are identical (greedy
decoding's tokens are expected; a difference can only come from float rounding at a near tie). The two runs
alternate image by image, so a change in the machine's speed touches both alike. Wall-clock times of one
machine, with its CPU beside them.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CATEGORIES = ("fabric", "bottle_cap", "wood_grain")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="offline")
    ap.add_argument("--images", type=int, default=24, help="test images diagnosed (spread over the categories)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch

    from samllava.model.checkpoint import load_model
    from samllava.core.config import load_profile
    from samllava.data import generate_synthetic, load_mvtec, sample_support
    from samllava.train.default_model import default_checkpoint
    from samllava.describe.lookup_decode import MAX_DRAFT
    from samllava.core.provenance import cpu_model, provenance
    from samllava.core.results import write_json

    profile = load_profile(args.profile)
    model = load_model(profile, default_checkpoint(profile, train_if_missing=False)).eval()
    size = profile.data.image_size
    per_cat = -(-args.images // len(CATEGORIES))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-lookup-") as tmp:
        root = generate_synthetic(Path(tmp), categories=list(CATEGORIES), n_train=8, n_test=per_cat, size=size, seed=11)
        data = load_mvtec(root)
        for name, cat in data.items():
            model.set_support(cat.load_images(sample_support(cat, 4, 0), size))
            for s in cat.test:
                image = cat.load_images([s], size)
                row = {"category": name, "label": s.label}
                for mode, draft in (("generate", 0), ("lookup", MAX_DRAFT)):
                    model.describer.lookup_draft = draft
                    t0 = time.perf_counter()
                    d = model.diagnose_with_support(image, name, max_new_tokens=40)[0]
                    row[f"{mode}_s"] = time.perf_counter() - t0
                    row[f"{mode}_description"] = d.description
                rows.append(row)
    gen = [r["generate_s"] for r in rows]
    look = [r["lookup_s"] for r in rows]
    same = sum(r["generate_description"] == r["lookup_description"] for r in rows)
    report = {"profile": args.profile, "cpu": cpu_model(), "threads": torch.get_num_threads(),
              "load_average": os.getloadavg(), "images": len(rows), "max_new_tokens": 40,
              "median_generate_s": statistics.median(gen), "median_lookup_s": statistics.median(look),
              "speedup_of_medians": statistics.median(gen) / statistics.median(look),
              "identical_descriptions": same, "rows": rows}
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=1))
    if args.out:
        write_json(args.out, report, run=provenance(profile=profile, data="synthetic, generated (seed 11)"))


if __name__ == "__main__":
    main()
