"""``samllava fetch-data``: MVTec-AD or VisA, downloaded, checked and laid out in the MVTec layout."""
from __future__ import annotations

import json
import sys

from samllava.assets import datasets as data_fetch
from samllava.assets import download


def fetch_data_cli(args) -> int:
    """``samllava fetch-data mvtec|visa [--out DIR] [--from-archive FILE]``; exit status 2 on failure."""
    try:
        out = data_fetch.fetch_data(args.dataset, args.out, from_archive=args.from_archive,
                                    keep_archive=args.keep_archive, verify=not args.no_checksum,
                                    progress=not args.quiet,
                                    log=lambda m: print(f"samllava fetch-data: {m}", file=sys.stderr))
    except (data_fetch.DataFetchError, download.DownloadError, FileNotFoundError, ValueError) as err:
        print(f"samllava fetch-data: {args.dataset}: {err}", file=sys.stderr)
        return 2
    counts = json.loads((out / data_fetch.LAID_OUT_MARKER).read_text())["counts"]
    n_train, n_test = (sum(c[k] for c in counts.values()) for k in ("train", "test_good"))
    n_anomaly = sum(c["test_anomaly"] for c in counts.values())
    print(f"{args.dataset}: {out} ({len(counts)} categories; {n_train} train, {n_test} normal test, "
          f"{n_anomaly} anomalous test images): samllava reproduce --data-root {args.dataset}={out}")
    return 0
