"""Every argument parser of ``samllava``: what each option means, its unit and its default.

Light on purpose: building the parsers reads the profiles' JSON files and nothing heavier, so that
``samllava --help`` and ``samllava CMD --help`` answer at once. A wrong value prints one line,
``samllava <command>: --option VALUE: what is wrong`` (:class:`Parser`), and exits with status 2.
"""
from __future__ import annotations

import argparse
import re
import textwrap

from samllava.cli.checks import seeds, whole
from samllava.core.config import DEFAULT_PROFILE, PROFILE_DIR, PROFILE_ENV, Profile, load_profile
from samllava.diagnose.signal import profiles_without_signal
from samllava.export.parser import add_export_parser

DESCRIPTION = """\
samllava: SAM-LLaVA, industrial defect diagnosis. For an image and a few normal images of the same part:
a verdict, the defect's mask and a description. Train it on your own MVTec-layout folder, evaluate it,
and regenerate the paper's tables.

  samllava diagnose IMAGES --support NORMALS --out OUT   the profile's trained model (built on first use)
  samllava train --data DIR --out RUN                    then: samllava diagnose ... --checkpoint RUN
  samllava CMD --help                                    every option, with its unit and default

A wrong argument prints one line, "samllava <command>: <what is wrong>", and exits with status 2.
--debug shows the traceback of an error and the libraries' own warnings."""
# One line per profile for the help (tests/cli keeps the keys equal to samllava/profiles/*.json).
PROFILE_LINES = {
    "tiny": "tiny random models everywhere: tests and CI; its numbers mean nothing",
    "offline": "real ImageNet EfficientNet-Lite0 memory and SmolLM2-135M language model; a laptop's CPU",
    "paper": "the paper's CLIP ViT-B-16, SAM ViT-H and LLaVA-1.5-7B (fetch-weights --profile paper; a GPU)",
}
TRAIN_SHOTS = 4  # train --shots default: samllava.train.default_model.DEFAULT_SHOTS (tests/cli checks)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line naming the option (no usage block)."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: {_one_line(message)} (see {self.prog} --help)\n")


def _one_line(message: str) -> str:
    """argparse's "argument --x: VALUE: what" as "--x VALUE: what"; its invalid-choice text made short."""
    m = re.match(r"argument (\S+?)(?:/\S+)?: (.*)", message, re.S)
    if not m:
        return message
    option, rest = m.groups()
    choice = re.match(r"invalid choice: '?([^']*)'? \(choose from (.*)\)", rest)
    if choice:
        return f"{option} {choice.group(1)}: not one of {choice.group(2)}"
    return f"{option} {rest}"


def _profiles() -> list[Profile]:
    """Every packaged profile, in the order of :data:`PROFILE_LINES` (any other after them)."""
    names = sorted((p.stem for p in PROFILE_DIR.glob("*.json")),
                   key=lambda n: (list(PROFILE_LINES).index(n) if n in PROFILE_LINES else len(PROFILE_LINES), n))
    return [load_profile(n) for n in names]


def _each(values: dict[str, object]) -> str:
    return ", ".join(f"{name} {value}" for name, value in values.items())


class Help:
    """Help texts computed from the profiles once per parser build."""

    def __init__(self) -> None:
        profiles = _profiles()
        self.by_name = {p.name: p for p in profiles}
        self.needs_normals = profiles_without_signal(profiles)
        names = {p.name: p.name + (" (default)" if p.name == DEFAULT_PROFILE else "") for p in profiles}
        width = max(len(n) for n in names.values())
        lines = [f"  {names[p.name]:<{width}}  {PROFILE_LINES.get(p.name, p.description.split('.')[0])}"
                 for p in profiles]
        self.epilog = ("profiles (--profile NAME, or the path of a profile JSON file):\n" + "\n".join(lines)
                       + f"\nneed normal images (--support, --shots; their CLIP has random weights): "
                       f"{', '.join(self.needs_normals)}")

    def per_profile(self, get) -> str:
        return _each({name: get(p) for name, p in self.by_name.items()})


def _profile_option(p: argparse.ArgumentParser, default: str | None = None) -> None:
    shown = default or f"${PROFILE_ENV}, else {DEFAULT_PROFILE}"
    p.add_argument("--profile", default=default, metavar="NAME",
                   help=f"which models: {', '.join(PROFILE_LINES)} (listed below) or a profile JSON file "
                        f"(default: {shown})")


def _device_options(p: argparse.ArgumentParser, dtype: bool = True) -> None:
    """``--device`` and ``--dtype`` (:mod:`samllava.core.device`)."""
    p.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:N or auto (default: $SAMLLAVA_DEVICE, else cuda when available, else cpu)")
    if dtype:
        p.add_argument("--dtype", default=None,
                       help="weights of the frozen SAM encoder and LLaVA: float32, bfloat16 or float16 (default: "
                            "the profile's on a GPU, float32 on the CPU)")


def _common(p: argparse.ArgumentParser) -> None:
    # also after the command (samllava diagnose ... --debug); SUPPRESS keeps the top level's value otherwise
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the traceback of an error and the libraries' warnings")


def _sub(sub, name: str, help_text: str, info: Help, profile: bool = True) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=textwrap.fill(help_text, 100),
                       epilog=info.epilog if profile else None, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    return p


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="samllava", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", default=False,
                   help="show the traceback of an error and the libraries' warnings")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = Help()
    for add in (_diagnose_parser, _train_parser, _evaluate_parser, _reproduce_parser, _fetch_weights_parser,
                _fetch_data_parser, _make_data_parser, _bench_parser, _compare_parser):
        add(sub, info)
    export = add_export_parser(sub)  # its options live with the export (samllava/export/parser.py)
    export.description = textwrap.fill(export.description, 100)
    export.epilog, export.formatter_class = info.epilog, argparse.RawDescriptionHelpFormatter
    _common(export)
    return p


def _diagnose_parser(sub, info: Help) -> None:
    d = _sub(sub, "diagnose", "verdict, masks, yes/no answer and description for images and folders", info)
    d.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files and folders of images (searched recursively): png, jpg, bmp, tif, webp")
    d.add_argument("--support", default=None, metavar="DIR",
                   help="folder of normal (defect-free) images of the same part: the few-shot memory and the "
                        f"verdict's thresholds, cached by content. Required by the {' and '.join(info.needs_normals)}"
                        " profiles (no zero-shot signal); default: none (zero-shot, the paper profile only)")
    d.add_argument("--calibration", default=None, metavar="DIR",
                   help="folder of other normal images (not in --support) that calibrate the verdict: with a few "
                        "dozen the false-positive rate holds closely (default: the --support images, each left "
                        "out in turn)")
    d.add_argument("--out", required=True, metavar="DIR",
                   help="output folder, created when missing: <image>/mask.png and overlay.png at the image's own "
                        "size, <image>/report.json, summary.csv")
    d.add_argument("--category", default=None,
                   help="what the part is, e.g. bottle, for the description (default: 'the part')")
    d.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="a trained model: the --out folder of `samllava train --data` or its last.pt (default: the "
                        "profile's default model, trained once on first use)")
    _profile_option(d)
    d.add_argument("--batch-size", type=whole(1), default=32, metavar="N",
                   help="images per batch (on a GPU: at most, as many as fit; default 32)")
    d.add_argument("--max-new-tokens", type=whole(1), default=None, metavar="N",
                   help="longest description, in tokens (default: the profile's llm.max_new_tokens: "
                        f"{info.per_profile(lambda p: p.llm.max_new_tokens)})")
    d.add_argument("--no-progress", action="store_true", help="no progress bars (default: shown)")
    _device_options(d)


def _train_parser(sub, info: Help) -> None:
    t = _sub(sub, "train", "train the trainable parts end to end: on --data into --out, or (alone) the profile's "
                           "default model in the weights cache; torchrun for several processes", info)
    t.add_argument("--data", default=None, metavar="DIR",
                   help="your MVTec-layout root: labelled test images (masks where present) train the model, "
                        "train/good gives the support (default: the profile's synthetic training set)")
    t.add_argument("--out", default=None, metavar="DIR",
                   help="output folder of the trained model (last.pt); then use it with diagnose or evaluate "
                        "--checkpoint DIR (default: the profile's default model, in the weights cache)")
    _profile_option(t)
    t.add_argument("--epochs", type=whole(1), default=None, metavar="N",
                   help="passes over the training images (default: the profile's train.epochs: "
                        f"{info.per_profile(lambda p: p.train.epochs)})")
    t.add_argument("--shots", type=whole(0), default=None, metavar="K",
                   help=f"normal support images per category while training, 0 = zero-shot examples "
                        f"(default {TRAIN_SHOTS})")
    t.add_argument("--micro-batch", type=whole(1), default=None, metavar="N",
                   help="images per forward/backward on a GPU; gradients accumulate to train.batch_size "
                        "(default: gpu.train_micro_batch, else as many as fit in free memory)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars (default: shown)")
    _device_options(t)


def _evaluate_parser(sub, info: Help) -> None:
    e = _sub(sub, "evaluate", "image/pixel AUROC, AUPRO, F1-max (and description accuracy) on an MVTec-layout "
                              "root, as JSON", info)
    e.add_argument("--data", required=True, metavar="DIR",
                   help="data set root: one folder per category in the MVTec layout (or VisA)")
    e.add_argument("--out", required=True, metavar="FILE", help="JSON file to write (its folder is created)")
    _profile_option(e)
    e.add_argument("--shots", type=whole(0), default=0, metavar="K",
                   help="normal support images per category, 0 = zero-shot (default 0; at least 1 with the "
                        f"{' and '.join(info.needs_normals)} profiles)")
    e.add_argument("--seeds", type=seeds, default=[0], metavar="LIST",
                   help="comma-separated support seeds, e.g. 0,1,2,3,4 (default 0)")
    e.add_argument("--stage", choices=["coarse", "full"], default="coarse",
                   help="coarse: the CLIP map and memory alone; full: the trained model (default coarse)")
    e.add_argument("--categories", default=None, metavar="LIST",
                   help="comma-separated subset of categories (default: all of --data)")
    e.add_argument("--image-size", type=whole(32), default=None, metavar="PIXELS",
                   help="side of the square the images are resized to, in pixels (default: the profile's "
                        f"data.image_size: {info.per_profile(lambda p: p.data.image_size)})")
    e.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="trained model for --stage full (default: the profile's default model, trained on first use)")
    e.add_argument("--batch-size", type=whole(1), default=None, metavar="N",
                   help="images per batch on a GPU (default: gpu.encode_batch, else as many as fit in free memory)")
    _device_options(e)


def _reproduce_parser(sub, info: Help) -> None:
    r = _sub(sub, "reproduce", "run the numbered notebooks headless (papermill): every table and figure", info)
    _profile_option(r, default="offline")
    r.add_argument("--only", nargs="*", default=None, metavar="NB",
                   help="notebook numbers or names, e.g. 01 03 (default: all, in order)")
    r.add_argument("--data-root", action="append", default=None, metavar="NAME=DIR",
                   help="a data set for the notebooks, repeatable: mvtec=DIR, visa=DIR, own=DIR (default: none; "
                        "the notebooks use their generated stand-ins)")
    r.add_argument("--smoke", action="store_true",
                   help="small budgets (seeds, steps): a quick check of every code path (default: full budgets)")
    r.add_argument("--allow-dirty", action="store_true",
                   help="run into results/ from a tree with uncommitted changes; every table then says 'dirty tree' "
                        "(default: refused)")
    _device_options(r, dtype=False)


def _fetch_weights_parser(sub, info: Help) -> None:
    f = _sub(sub, "fetch-weights", "download the weights a profile needs (checksums verified, resumable)", info)
    f.add_argument("ids", nargs="*", metavar="ID", help="weight ids (default: those of --profile)")
    _profile_option(f)
    f.add_argument("--dir", default=None, metavar="DIR",
                   help="download folder (default: $SAMLLAVA_WEIGHTS_DIR, else ~/.cache/samllava)")
    f.add_argument("--quiet", action="store_true", help="no progress bars (default: shown)")


def _fetch_data_parser(sub, info: Help) -> None:
    g = _sub(sub, "fetch-data", "download MVTec-AD or VisA (checksums verified), unpack, lay out for --data-root",
             info, profile=False)
    g.add_argument("dataset", choices=["mvtec", "visa"], help="which data set: mvtec or visa")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="data set root to write (default: $SAMLLAVA_DATA_DIR/<dataset>, else data/<dataset> in "
                        "the repository); then: reproduce --data-root <dataset>=DIR")
    g.add_argument("--from-archive", default=None, metavar="FILE",
                   help="use this released archive instead of downloading (default: download)")
    g.add_argument("--keep-archive", action="store_true",
                   help="keep the downloaded archive after unpacking (default: deleted)")
    g.add_argument("--no-checksum", action="store_true",
                   help="accept an archive whose SHA-256 is not the published one (default: refused)")
    g.add_argument("--quiet", action="store_true", help="no progress bars (default: shown)")


def _make_data_parser(sub, info: Help) -> None:
    m = _sub(sub, "make-data", "write a generated defect data set in the MVTec layout", info, profile=False)
    m.add_argument("--out", required=True, metavar="DIR", help="data set root to write (created when missing)")
    m.add_argument("--kind", choices=["synthetic", "realtex"], default="synthetic",
                   help="synthetic: procedural surfaces and defects; realtex: real texture photographs with subtle "
                        "painted defects, the harder development set (default synthetic)")
    m.add_argument("--seed", type=whole(0), default=0, metavar="N", help="random seed of the generator (default 0)")
    m.add_argument("--size", type=whole(32), default=256, metavar="PIXELS",
                   help="side of the square images, in pixels (default 256)")
    m.add_argument("--n-train", type=whole(1), default=8, metavar="N",
                   help="normal train/good images per category (default 8)")
    m.add_argument("--n-test", type=whole(2), default=24, metavar="N",
                   help="test images per category, half of them defective (default 24)")


def _bench_parser(sub, info: Help) -> None:
    b = _sub(sub, "bench", "complexity benchmark: parameters, latency, throughput, peak memory", info)
    _profile_option(b)
    b.add_argument("--runs", type=whole(1), default=20, metavar="N", help="timed runs per measurement (default 20)")
    b.add_argument("--warmup", type=whole(0), default=5, metavar="N",
                   help="untimed runs before them (default 5)")
    b.add_argument("--out", default=None, metavar="FILE", help="JSON file to write (default: printed only)")
    _device_options(b, dtype=False)


def _compare_parser(sub, info: Help) -> None:
    c = _sub(sub, "compare-results", "compare every table of two results folders cell by cell; exit 1 when a cell "
                                     "is outside its tolerance", info, profile=False)
    c.add_argument("old_dir", metavar="OLD_DIR", help="the reference run's results folder (e.g. the committed one)")
    c.add_argument("new_dir", metavar="NEW_DIR", help="the rerun's results folder")
