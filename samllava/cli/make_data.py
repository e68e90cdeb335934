"""``samllava make-data``: a generated data set in the MVTec layout."""
from __future__ import annotations

from samllava.data import generate_realtex, generate_synthetic


def make_data_cli(args) -> int:
    make = generate_realtex if args.kind == "realtex" else generate_synthetic
    print(make(args.out, n_train=args.n_train, n_test=args.n_test, size=args.size, seed=args.seed))
    return 0
