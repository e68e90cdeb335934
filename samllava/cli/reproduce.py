"""``samllava reproduce``: every numbered notebook headless (papermill)."""
from __future__ import annotations

from samllava.notebook.runner import reproduce


def reproduce_cli(args) -> int:
    """``--data-root`` was read into ``args.data_roots`` by :func:`samllava.cli.checks.check_reproduce`."""
    reproduce(profile=args.profile, only=args.only, data_roots=args.data_roots, smoke=args.smoke, device=args.device,
              allow_dirty=args.allow_dirty)
    return 0
