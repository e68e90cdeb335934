"""Data: MVTec AD, VisA and own-data loaders, the synthetic defect generator, few-shot support sets
and instruction records.

Loaders return ``{category: CategoryData}``; pixels are read on demand with
``CategoryData.load_images`` / ``load_masks``. See ``samllava.data.images`` for the documented
image conversions (greyscale and RGBA to RGB, 16-bit scaling).
"""
from .dataset import CategoryData, Sample, balanced_subset
from .fewshot import FEWSHOT_SEEDS, FEWSHOT_SHOTS, sample_support, support_indices
from .folder import load_dataset, load_folder
from .images import ImageFiles, load_image, load_mask
from .instructions import instruction_records, position_on_grid
from .mvtec import MVTEC_CATEGORIES, load_mvtec
from .realtex import REALTEX_CATEGORIES, generate_realtex
from .synthetic import (
    SYNTHETIC_CATEGORIES,
    TADD_STANDIN_NOTE,
    TADD_STANDIN_SUBSETS,
    SyntheticCategory,
    generate_mvtec_miniature,
    generate_synthetic,
    generate_visa_miniature,
)
from .visa import VISA_CATEGORIES, load_visa

__all__ = [
    "CategoryData",
    "Sample",
    "balanced_subset",
    "ImageFiles",
    "load_image",
    "load_mask",
    "load_mvtec",
    "load_visa",
    "load_folder",
    "load_dataset",
    "generate_synthetic",
    "generate_realtex",
    "REALTEX_CATEGORIES",
    "generate_mvtec_miniature",
    "generate_visa_miniature",
    "SYNTHETIC_CATEGORIES",
    "TADD_STANDIN_SUBSETS",
    "TADD_STANDIN_NOTE",
    "SyntheticCategory",
    "sample_support",
    "support_indices",
    "FEWSHOT_SEEDS",
    "FEWSHOT_SHOTS",
    "instruction_records",
    "position_on_grid",
    "MVTEC_CATEGORIES",
    "VISA_CATEGORIES",
]
