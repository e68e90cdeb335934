"""``samllava fetch-weights`` and ``samllava fetch-data``: the paper's weights and data sets, checked."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from samllava.assets import download, weights
from samllava.core.config import load_profile
from samllava.assets import datasets as data_fetch


def fetch_weights_cli(args) -> int:
    """``samllava fetch-weights [IDS] [--profile P] [--dir DIR]``: every file a profile needs.

    States the disk needed first, then prints ``<id>: <path>`` per file and, per failure, one line
    ``samllava fetch-weights: <id>: <what is wrong and what to do>`` on stderr. Exit status 2 when any
    file failed (the others are still fetched), 0 otherwise.
    """
    prog = "samllava fetch-weights"
    try:
        ids = args.ids or weights.profile_weight_ids(load_profile(args.profile))
        specs = [weights.spec(i) for i in ids]
    except (KeyError, FileNotFoundError, ValueError) as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2
    directory = Path(args.dir or weights.cache_dir()).expanduser()
    # a file the user already points at (environment variable) is not fetched again, unless --dir asks for a copy
    todo = [s for s in specs if args.dir or not os.environ.get(s.env)]
    need = sum(weights.pending_bytes(s, directory / s.filename) for s in todo)
    if need:
        print(f"{prog}: about {download.human_bytes(need)} to download into {directory} "
              f"({download.human_bytes(download.free_bytes(directory))} free)", file=sys.stderr)
        try:
            download.ensure_free_space(directory, need, "the download")
        except download.DownloadError as err:
            print(f"{prog}: disk: {err}", file=sys.stderr)
            return 2
    failed = 0
    for s in specs:
        try:
            if s in todo and (s.url or s.hf_repo):
                path = weights.fetch(s.id, directory, progress=not args.quiet)
            else:
                path = weights.resolve(s.id)
            print(f"{s.id}: {path}")
        except (download.DownloadError, weights.MissingWeightsError) as err:
            print(f"{prog}: {s.id}: {err}", file=sys.stderr)
            failed += 1
    if args.dir and directory != weights.cache_dir() and failed < len(specs):
        print(f"{prog}: the files are in {directory}: export {weights.CACHE_ENV}={directory} "
              "so that the profiles find them",
              file=sys.stderr)
    return 2 if failed else 0


def fetch_data_cli(args) -> int:
    """``samllava fetch-data mvtec|visa --out DIR [--from-archive FILE]``; exit status 2 on failure."""
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
