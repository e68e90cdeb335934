"""What every command checks before it imports torch or loads a model: the paths, the folders to write
and the numbers it was given. Light on purpose (standard library and the profiles' JSON only), so a
wrong argument is answered at once.

A failed check raises :class:`UsageError` with ``--option VALUE: what is wrong``; :func:`samllava.cli.main`
prints it as ``samllava <command>: --option VALUE: what is wrong`` and exits with status 2. The checks that
need the image decoders or the data loaders (readable images, a data set's layout) run in the command's
own module, still before any model is built.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from samllava.core.config import Profile, load_profile
from samllava.diagnose.signal import no_signal_message


class UsageError(ValueError):
    """A wrong argument: one line naming the option, exit status 2."""


# ----------------------------------------------------------------------------- numbers (argparse types)
def whole(minimum: int):
    """An argparse ``type`` for a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text}: not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text}: must be at least {minimum}")
        return value

    parse.__name__ = f"whole number >= {minimum}"
    return parse


def seeds(text: str) -> list[int]:
    """An argparse ``type`` for comma-separated whole numbers, e.g. ``0,1,2``."""
    try:
        out = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: expected comma-separated whole numbers, e.g. 0,1,2") from None
    if not out:
        raise argparse.ArgumentTypeError(f"{text!r}: no seed given")
    return out


# ----------------------------------------------------------------------------- paths
def existing(option: str, value: str, kind: str = "any") -> Path:
    """``value`` as a path that exists (``kind``: "any", "file" or "folder")."""
    path = Path(value).expanduser()
    if not path.exists():
        raise UsageError(f"{option} {value}: no such {'file or folder' if kind == 'any' else kind}")
    if kind == "folder" and not path.is_dir():
        raise UsageError(f"{option} {value}: not a folder")
    if kind == "file" and not path.is_file():
        raise UsageError(f"{option} {value}: not a file")
    return path


def output_folder(option: str, value: str) -> Path:
    """The folder ``value``, created when missing, where a file can be written."""
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {value}: a file is there, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        # a probe file: permissions, read-only mounts and full disks all show here, as root too
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise UsageError(f"{option} {value}: cannot create folder or write in it ({err.strerror or err})") from None
    return path


def output_file(option: str, value: str) -> Path:
    """The file ``value`` to write: not a folder, in a folder that exists or can be created and written."""
    path = Path(value).expanduser()
    if path.is_dir():
        raise UsageError(f"{option} {value}: a folder, expected a file name")
    try:
        output_folder(option, str(path.parent))
    except UsageError as err:
        raise UsageError(f"{option} {value}: cannot write there ({str(err).split('(', 1)[-1]}") from None
    return path


def profile(value: str | None) -> Profile:
    """The profile ``--profile`` names (None: ``$SAMLLAVA_PROFILE``, else the default)."""
    try:
        return load_profile(value)
    except FileNotFoundError as err:
        raise UsageError(f"--profile {value}: {str(err).split(': ', 1)[-1]}") from None
    except (ValueError, TypeError) as err:
        raise UsageError(f"--profile {value}: not a valid profile ({err})") from None


def needs_normals(p: Profile, normals: bool, what: str) -> None:
    """Refuse what the profile cannot answer without normal images (random CLIP weights)."""
    message = None if normals else no_signal_message(p, what)
    if message:
        raise UsageError(message)


def key_values(option: str, items: list[str] | None) -> dict[str, str]:
    """``NAME=DIR`` items as a mapping; every DIR must be a folder."""
    out = {}
    for item in items or []:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise UsageError(f"{option} {item}: expected NAME=DIR, e.g. mvtec=/data/mvtec")
        out[name] = str(existing(option, folder, "folder"))
    return out


# ----------------------------------------------------------------------------- per command
def check_diagnose(args) -> None:
    p = profile(args.profile)
    for image in args.images:
        existing("IMAGE", image)
    if args.calibration is not None and args.support is None:
        raise UsageError(f"--calibration {args.calibration}: calibrates the verdict of a support set; give --support")
    for option in ("support", "calibration"):
        if getattr(args, option) is not None:
            existing(f"--{option}", getattr(args, option), "folder")
    if args.checkpoint is not None:
        existing("--checkpoint", args.checkpoint)
    needs_normals(p, args.support is not None, "diagnose")
    output_folder("--out", args.out)  # last: it creates the folder


def check_evaluate(args) -> None:
    p = profile(args.profile)
    existing("--data", args.data, "folder")
    if args.checkpoint is not None:
        existing("--checkpoint", args.checkpoint)
    if args.categories is not None and not [c for c in args.categories.split(",") if c.strip()]:
        raise UsageError(f"--categories {args.categories!r}: no category named")
    needs_normals(p, args.shots > 0, "evaluate")
    output_file("--out", args.out)


def check_train(args) -> None:
    profile(args.profile)
    if args.data is not None:
        existing("--data", args.data, "folder")
    if args.out is None and (args.data is not None or args.epochs is not None or args.shots is not None):
        raise UsageError("--out is needed with --data, --epochs or --shots (the default model is trained by "
                         "`samllava train --profile P` alone)")
    if args.out is not None:
        output_folder("--out", args.out)


def check_reproduce(args) -> None:
    profile(args.profile)
    args.data_roots = key_values("--data-root", args.data_root)


def check_fetch_weights(args) -> None:
    if not args.ids:
        profile(args.profile)
    if args.dir is not None:
        output_folder("--dir", args.dir)


def check_fetch_data(args) -> None:
    if args.from_archive is not None:
        existing("--from-archive", args.from_archive, "file")
    if args.out is not None:
        output_folder("--out", args.out)


def check_make_data(args) -> None:
    output_folder("--out", args.out)


def check_bench(args) -> None:
    profile(args.profile)
    if args.out is not None:
        output_file("--out", args.out)


def check_compare(args) -> None:
    for option in ("old_dir", "new_dir"):
        existing(option.upper(), getattr(args, option), "folder")


def check_export(args) -> None:
    profile(args.profile)
    existing("--support", args.support, "folder")
    if args.calibration is not None:
        existing("--calibration", args.calibration, "folder")
    if args.checkpoint is not None:
        existing("--checkpoint", args.checkpoint)
    output_file("--out", args.out)


CHECKS = {"diagnose": check_diagnose, "evaluate": check_evaluate, "train": check_train,
          "reproduce": check_reproduce, "fetch-weights": check_fetch_weights, "fetch-data": check_fetch_data,
          "make-data": check_make_data, "bench": check_bench,
          "compare-results": check_compare, "export": check_export}


def option_error(option: str, value, err: Exception) -> UsageError:
    """A library's error about ``value`` as the user's option: ``--option VALUE: what is wrong``."""
    text = str(err.args[0] if isinstance(err, KeyError) and err.args else err)
    for said in (f"{value}: ", f"{Path(str(value))}: "):  # the library's message may start with the value too
        text = text.removeprefix(said)
    return UsageError(f"{option} {value}: {text}")

