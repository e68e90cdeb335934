"""Data: MVTec AD, VisA and own-data loaders, the synthetic defect generator, few-shot support sets
and instruction records.

Loaders return ``{category: CategoryData}``; pixels are read on demand with
``CategoryData.load_images`` / ``load_masks``. See ``samllava.data.images`` for the documented
image conversions (greyscale and RGBA to RGB, 16-bit scaling).
"""
from samllava.data.dataset import CategoryData, Sample, balanced_subset
from samllava.data.fewshot import (
    FEWSHOT_SEEDS, FEWSHOT_SHOTS, sample_calibration, sample_support, support_images, support_indices,
)
from samllava.data.folder import load_dataset, load_folder
from samllava.data.images import ImageFiles, load_image, load_mask
from samllava.data.instructions import instruction_records, position_on_grid
from samllava.data.mvtec import MVTEC_CATEGORIES, load_mvtec
from samllava.data.photos import BACKGROUNDS, generate_photos
from samllava.data.realtex import REALTEX_CATEGORIES, generate_realtex
from samllava.data.synthetic import (
    SYNTHETIC_CATEGORIES, TADD_STANDIN_NOTE, TADD_STANDIN_SUBSETS, SyntheticCategory, generate_mvtec_miniature,
    generate_synthetic, generate_visa_miniature,
)
from samllava.data.visa import VISA_CATEGORIES, load_visa

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
    "generate_photos",
    "BACKGROUNDS",
    "REALTEX_CATEGORIES",
    "generate_mvtec_miniature",
    "generate_visa_miniature",
    "SYNTHETIC_CATEGORIES",
    "TADD_STANDIN_SUBSETS",
    "TADD_STANDIN_NOTE",
    "SyntheticCategory",
    "sample_support",
    "sample_calibration",
    "support_images",
    "support_indices",
    "FEWSHOT_SEEDS",
    "FEWSHOT_SHOTS",
    "instruction_records",
    "position_on_grid",
    "MVTEC_CATEGORIES",
    "VISA_CATEGORIES",
]
