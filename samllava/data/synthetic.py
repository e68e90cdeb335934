"""Synthetic defect data in the MVTec layout, and miniature fakes of MVTec AD and VisA.

The offline profiles' default data and the labelled stand-in for the paper's TADD subsets (which
cannot be downloaded). Each image is drawn by :func:`samllava.data.drawing.render` (a procedural
surface, a defect painted with hard edges: its mask is exactly the changed pixels) and has a text
description (category, defect type, position on a 3x3 grid, relative size, shape, colour).

Deterministic: image ``<split>/<folder>/NNN`` is drawn from ``numpy.random.default_rng([seed,
crc32(category), crc32("<split>/<folder>"), NNN])``, so equal arguments write equal bytes (on one
machine; another BLAS build may round a pixel differently). Output folders are written to a
temporary folder and renamed into place, with a ``generator.json`` recording the arguments: a
second call with the same arguments reuses them, one with other arguments needs ``overwrite``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import zlib
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from samllava.core.config import Profile
from samllava.core.paths import data_dir
from samllava.data.dataset import GOOD
from samllava.data.drawing import DEFECT_SIZE_CLASSES, DEFECT_TYPES, SyntheticCategory, render
from samllava.data.visa import SPLIT_FILE, SPLIT_HEADER
from samllava.data.writer import (
    Item, commit_folder, image_rng, prepare_folder, scratch_folder, single_threaded, test_items, to_uint8,
    write_mvtec_layout,
)

GENERATOR_VERSION = 1  # bump when drawing changes, so cached folders are not reused

# ----------------------------------------------------------------------------- categories

SYNTHETIC_CATEGORIES: dict[str, SyntheticCategory] = {c.name: c for c in (
    SyntheticCategory("fabric", "weave", "texture", "a woven grey fabric", ((0.66, 0.68, 0.70), (0.30, 0.31, 0.34))),
    SyntheticCategory("wood_grain", "grain", "texture", "a light wooden board",
                      ((0.86, 0.72, 0.52), (0.60, 0.40, 0.22))),
    SyntheticCategory("metal_plate", "brushed", "texture", "a brushed steel plate", ((0.62, 0.64, 0.68),)),
    SyntheticCategory("concrete", "granular", "texture", "a grey concrete surface", ((0.68, 0.66, 0.62),)),
    SyntheticCategory("bottle_cap", "cap", "object", "a red bottle cap on a dark background",
                      ((0.78, 0.14, 0.12), (0.08, 0.08, 0.09)), avoid_colours=("red",)),
    SyntheticCategory("pill_tablet", "tablet", "object", "a white pill with red speckles on a dark background",
                      ((0.93, 0.92, 0.88), (0.75, 0.25, 0.22), (0.07, 0.07, 0.08)), avoid_colours=("red", "white")),
)}

# Synthetic stand-ins for some of the paper's TADD subsets (TADD cannot be downloaded). Keys are the
# paper's subset names so tables can sit beside its numbers; results from them must say "stand-in"
# (TADD_STANDIN_NOTE). Surfaces and defect types loosely follow each subset (fabric, pavement
# cracks, commutator, magnetic tile, steel strip, rail); they are not the subsets' images.
TADD_STANDIN_NOTE = ("TADD subsets are synthetic stand-ins (samllava.data.TADD_STANDIN_SUBSETS): the real TADD "
                     "is not downloadable; numbers are not comparable with the paper's")
TADD_STANDIN_SUBSETS: dict[str, SyntheticCategory] = {
    "Aitex": SyntheticCategory("tadd_aitex_standin", "weave", "texture", "a woven beige fabric",
                               ((0.82, 0.76, 0.64), (0.45, 0.40, 0.32)), scale=0.75,
                               defects=("hole", "stain", "contamination", "scratch"), stands_in_for="Aitex"),
    "CFD": SyntheticCategory("tadd_cfd_standin", "granular", "texture", "a grey asphalt road surface",
                             ((0.52, 0.52, 0.52),), scale=0.7, defects=("crack",), stands_in_for="CFD"),
    "Crack500": SyntheticCategory("tadd_crack500_standin", "granular", "texture", "a light concrete pavement",
                                  ((0.74, 0.72, 0.68),), scale=1.3, defects=("crack", "hole"),
                                  stands_in_for="Crack500"),
    "KolektorSDD": SyntheticCategory("tadd_kolektorsdd_standin", "brushed", "texture",
                                     "a polished copper commutator surface",
                                     ((0.78, 0.52, 0.36),), defects=("crack", "scratch"), stands_in_for="KolektorSDD"),
    "MT": SyntheticCategory("tadd_mt_standin", "granular", "texture", "a dark grey magnetic tile",
                            ((0.40, 0.40, 0.42),),
                            scale=0.5, defects=("hole", "crack", "stain", "scratch"), stands_in_for="MT"),
    "NEU": SyntheticCategory("tadd_neu_standin", "brushed", "texture", "a hot-rolled steel strip",
                             ((0.50, 0.50, 0.50),),
                             scale=2.0, defects=("scratch", "contamination", "stain", "hole"), stands_in_for="NEU"),
    "RSDD": SyntheticCategory("tadd_rsdd_standin", "brushed", "texture", "a polished rail head surface",
                              ((0.80, 0.80, 0.82),), scale=3.0, defects=("hole", "stain"), stands_in_for="RSDD"),
}


def resolve_category(item: str | SyntheticCategory) -> SyntheticCategory:
    """A category config from a name in SYNTHETIC_CATEGORIES, a TADD subset name or stand-in folder name,
    or a config."""
    if isinstance(item, SyntheticCategory):
        return item
    by_name = {**SYNTHETIC_CATEGORIES, **TADD_STANDIN_SUBSETS, **{c.name: c for c in TADD_STANDIN_SUBSETS.values()}}
    if item not in by_name:
        raise ValueError(f"unknown synthetic category {item!r}; known: {sorted(SYNTHETIC_CATEGORIES)} "
                         f"and the TADD stand-ins {sorted(TADD_STANDIN_SUBSETS)}")
    return by_name[item]


# ----------------------------------------------------------------------------- writing

def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def generate_synthetic(root: str | os.PathLike, categories: Iterable[str | SyntheticCategory] | None = None,
                       n_train: int = 8, n_test: int = 24, size: int = 256, seed: int = 0,
                       overwrite: bool = False) -> Path:
    """Write a synthetic data set in the MVTec layout under ``root`` and return ``root``.

    Per category: ``train/good/NNN.png`` (``n_train``), ``test/good`` and ``test/<defect>/NNN.png``
    (``n_test``, ``n_test // 2`` of them defective, defect types and size classes cycled),
    ``ground_truth/<defect>/NNN_mask.png`` and ``descriptions.jsonl`` (one record per test image:
    image, label, defect_type, position, size, shape, colour, description).

    Args:
        categories: names (``SYNTHETIC_CATEGORIES``, TADD subset names) or configs; default all
            of ``SYNTHETIC_CATEGORIES``.
        overwrite: replace category folders written earlier with other arguments.
    """
    _check_counts(n_train=n_train, n_test=n_test)
    if n_test < 2:
        raise ValueError(f"n_test must be at least 2 (normal and defective test images), got {n_test}")
    if size < 32:
        raise ValueError(f"size must be at least 32 px, got {size}")
    root = Path(root)
    cats = [resolve_category(c) for c in (SYNTHETIC_CATEGORIES if categories is None else categories)]
    with single_threaded():
        for cat in cats:
            _generate_category(root / cat.name, cat, n_train, n_test, size, seed, overwrite)
    return root


def _generate_category(folder: Path, cat: SyntheticCategory, n_train: int, n_test: int, size: int, seed: int,
                       overwrite: bool) -> None:
    """One category of :func:`generate_synthetic` (skipped when already written with the same arguments)."""
    params = json.loads(json.dumps({"generator": "generate_synthetic", "version": GENERATOR_VERSION,
                                    "category": dataclasses.asdict(cat), "n_train": n_train, "n_test": n_test,
                                    "size": size, "seed": seed}))  # JSON round trip: tuples -> lists, as read back
    if not prepare_folder(folder, params, overwrite):
        return
    write_mvtec_layout(folder, test_items(n_train, n_test, cat.defects), _renderer(cat, size), cat.subject, seed,
                       cat.name, params)


def _renderer(cat: SyntheticCategory, size: int):
    """``draw(item, rng)`` of :func:`samllava.data.writer.write_mvtec_layout` for a synthetic category."""
    return lambda item, rng: render(cat, rng, (size, size), item.defect, item.size_class)


# ----------------------------------------------------------------------------- miniatures of the real data sets

MVTEC_DEFECTS: dict[str, tuple[str, ...]] = {  # the real defect folder names
    "bottle": ("broken_large", "broken_small", "contamination"),
    "cable": ("bent_wire", "cable_swap", "combined", "cut_inner_insulation", "cut_outer_insulation",
              "missing_cable", "missing_wire", "poke_insulation"),
    "capsule": ("crack", "faulty_imprint", "poke", "scratch", "squeeze"),
    "carpet": ("color", "cut", "hole", "metal_contamination", "thread"),
    "grid": ("bent", "broken", "glue", "metal_contamination", "thread"),
    "hazelnut": ("crack", "cut", "hole", "print"),
    "leather": ("color", "cut", "fold", "glue", "poke"),
    "metal_nut": ("bent", "color", "flip", "scratch"),
    "pill": ("color", "combined", "contamination", "crack", "faulty_imprint", "pill_type", "scratch"),
    "screw": ("manipulated_front", "scratch_head", "scratch_neck", "thread_side", "thread_top"),
    "tile": ("crack", "glue_strip", "gray_stroke", "oil", "rough"),
    "toothbrush": ("defective",),
    "transistor": ("bent_lead", "cut_lead", "damaged_case", "misplaced"),
    "wood": ("color", "combined", "hole", "liquid", "scratch"),
    "zipper": ("broken_teeth", "combined", "fabric_border", "fabric_interior", "rough", "split_teeth",
               "squeezed_teeth"),
}
MVTEC_GREYSCALE: tuple[str, ...] = ("grid", "screw", "zipper")
# Which synthetic surface draws each real category in the miniatures (only a look-alike for demos).
MVTEC_LOOKS: dict[str, str] = {
    "bottle": "bottle_cap", "cable": "bottle_cap", "capsule": "pill_tablet", "carpet": "fabric", "grid": "fabric",
    "hazelnut": "bottle_cap", "leather": "concrete", "metal_nut": "bottle_cap", "pill": "pill_tablet",
    "screw": "metal_plate", "tile": "concrete", "toothbrush": "bottle_cap", "transistor": "bottle_cap",
    "wood": "wood_grain", "zipper": "metal_plate",
}
VISA_LOOKS: dict[str, str] = {
    "candle": "pill_tablet", "capsules": "pill_tablet", "cashew": "wood_grain", "chewinggum": "pill_tablet",
    "fryum": "concrete", "macaroni1": "pill_tablet", "macaroni2": "concrete", "pcb1": "metal_plate",
    "pcb2": "metal_plate", "pcb3": "metal_plate", "pcb4": "metal_plate", "pipe_fryum": "concrete",
}


def _known(names: Iterable[str], table: dict, what: str) -> list[str]:
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in table]
    if unknown:
        noun = "category" if len(unknown) == 1 else "categories"
        raise ValueError(f"unknown {what} {noun} {unknown}; known: {sorted(table)}")
    return names


def generate_mvtec_miniature(root: str | os.PathLike, categories: Iterable[str] = ("bottle", "grid"), n_train: int = 3,
                             n_good: int = 2, n_per_defect: int = 1, size: int = 64, seed: int = 0,
                             overwrite: bool = False) -> Path:
    """Write a tiny fake MVTec AD in exactly its layout (real category and defect folder names,
    3-digit names, ``_mask.png`` masks of 0/255, greyscale PNGs for grid/screw/zipper); returns ``root``.

    The pixels are synthetic look-alikes (``MVTEC_LOOKS``); the drawn defect types are cycled over
    the real defect folders. For loader tests and demos only.
    """
    _check_counts(n_train=n_train, n_good=n_good, n_per_defect=n_per_defect)
    root = Path(root)
    names = _known(categories, MVTEC_DEFECTS, "MVTec-AD")
    for name in names:
        params = {"generator": "generate_mvtec_miniature", "version": GENERATOR_VERSION, "category": name,
                  "n_train": n_train, "n_good": n_good, "n_per_defect": n_per_defect, "size": size, "seed": seed}
        folder = root / name
        if not prepare_folder(folder, params, overwrite):
            continue
        items = [Item("train", GOOD, i, None, None) for i in range(n_train)]
        for j, folder_name in enumerate(MVTEC_DEFECTS[name]):
            drawn = DEFECT_TYPES[j % len(DEFECT_TYPES)]
            items += [Item("test", folder_name, i, drawn, DEFECT_SIZE_CLASSES[drawn][1]) for i in range(n_per_defect)]
        items += [Item("test", GOOD, i, None, None) for i in range(n_good)]
        look = SYNTHETIC_CATEGORIES[MVTEC_LOOKS[name]]
        write_mvtec_layout(folder, items, _renderer(look, size), look.subject, seed, name, params,
                           grey=name in MVTEC_GREYSCALE, descriptions=False)
    return root


def generate_visa_miniature(root: str | os.PathLike, categories: Iterable[str] = ("candle", "pcb1"), n_train: int = 4,
                            n_test_good: int = 2, n_anomaly: int = 3, size: int = 64, seed: int = 0,
                            overwrite: bool = False) -> Path:
    """Write a tiny fake VisA in exactly its layout; returns ``root``.

    ``<cat>/Data/Images/Normal/0000.JPG`` (4-digit), ``Data/Images/Anomaly/000.JPG``,
    ``Data/Masks/Anomaly/000.png`` holding defect ids (1, and 2 for a second defect on every
    other image), ``<cat>/image_anno.csv`` and ``split_csv/1cls.csv`` (``object,split,label,image,mask``).
    Images are ``size`` high and ``1.5 * size`` wide (VisA's are not square). The whole ``root``
    is one output unit.
    """
    _check_counts(n_train=n_train, n_test_good=n_test_good, n_anomaly=n_anomaly)
    names = _known(categories, VISA_LOOKS, "VisA")
    root = Path(root)
    params = {"generator": "generate_visa_miniature", "version": GENERATOR_VERSION, "categories": names,
              "n_train": n_train, "n_test_good": n_test_good, "n_anomaly": n_anomaly, "size": size, "seed": seed}
    if not prepare_folder(root, params, overwrite):
        return root
    tmp = scratch_folder(root)
    shape = (size, size * 3 // 2)
    split_rows = []
    for name in names:
        cat = SYNTHETIC_CATEGORIES[VISA_LOOKS[name]]
        base = tmp / name / "Data"
        for sub in ("Images/Normal", "Images/Anomaly", "Masks/Anomaly"):
            (base / sub).mkdir(parents=True)
        anno = []
        n_normal = n_train + n_test_good
        order = np.random.default_rng([seed, zlib.crc32(name.encode())]).permutation(n_normal)
        test_normal = set(order[:n_test_good].tolist())
        for i in range(n_normal):
            out = render(cat, image_rng(seed, name, "Normal", i), shape)
            rel = f"{name}/Data/Images/Normal/{i:04d}.JPG"
            Image.fromarray(to_uint8(out.image)).save(tmp / rel, format="JPEG", quality=95)
            split_rows.append((name, "test" if i in test_normal else "train", "normal", rel, ""))
            anno.append((rel, "normal", ""))
        for i in range(n_anomaly):
            rng = image_rng(seed, name, "Anomaly", i)
            drawn = DEFECT_TYPES[i % len(DEFECT_TYPES)]
            out = render(cat, rng, shape, drawn, DEFECT_SIZE_CLASSES[drawn][1])
            ids = out.mask.astype(np.uint8)
            image = out.image
            if i % 2 == 1:  # a second defect with its own id, as in VisA's multi-id masks
                second = render(cat, rng, shape, "contamination", "small")
                extra = second.mask & ~out.mask
                ids[extra] = 2
                image = np.where(extra[..., None], second.image, image)
            rel, mask_rel = f"{name}/Data/Images/Anomaly/{i:03d}.JPG", f"{name}/Data/Masks/Anomaly/{i:03d}.png"
            Image.fromarray(to_uint8(image)).save(tmp / rel, format="JPEG", quality=95)
            Image.fromarray(ids).save(tmp / mask_rel)
            split_rows.append((name, "test", "anomaly", rel, mask_rel))
            anno.append((rel, out.attrs["defect_type"], mask_rel))
        (tmp / name / "image_anno.csv").write_text("image,label,mask\n" + "".join(",".join(r) + "\n" for r in anno))
    (tmp / SPLIT_FILE).parent.mkdir()
    (tmp / SPLIT_FILE).write_text(",".join(SPLIT_HEADER) + "\n" + "".join(",".join(r) + "\n" for r in split_rows))
    commit_folder(tmp, root, params)
    return root


def ensure_synthetic(profile: Profile, seed: int = 0, name: str = "synthetic") -> Path:
    """The profile's synthetic data set under :func:`samllava.core.paths.data_dir`, generated once
    (deterministic by seed) and reused."""
    size = profile.data.image_size
    root = data_dir() / f"{name}_s{size}_n{profile.data.synthetic_images}_seed{seed}"
    if not (root / ".complete").exists():
        generate_synthetic(root, n_train=profile.data.synthetic_train, n_test=profile.data.synthetic_images,
                           size=size, seed=seed, overwrite=True)
        (root / ".complete").write_text("ok\n")
    return root
