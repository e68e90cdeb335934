"""``samllava fetch-weights``: the weights a profile needs, checked (light: no torch)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from samllava.assets import download, weights
from samllava.core.config import load_profile


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
    failed, fetched = 0, 0
    for s in specs:
        try:
            if s in todo and (s.url or s.hf_repo):
                path = weights.fetch(s.id, directory, progress=not args.quiet)
                fetched += 1
                print(f"{s.id}: {path}")
            else:
                path = weights.resolve(s.id)
                shipped = s.packaged is not None and not (s.url or s.hf_repo)
                print(f"{s.id}: {path}" + (" (shipped with an installed package: nothing to download)"
                                           if shipped else ""))
        except (download.DownloadError, weights.MissingWeightsError) as err:
            print(f"{prog}: {s.id}: {err}", file=sys.stderr)
            failed += 1
    if fetched and args.dir and directory != weights.cache_dir():
        print(f"{prog}: the downloaded files are in {directory}: export {weights.CACHE_ENV}={directory} "
              "so that the profiles find them", file=sys.stderr)
    return 2 if failed else 0
