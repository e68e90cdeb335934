"""Stage 2, fine segmentation with SAM (Sec. 3.1 Eq. 3-4, Sec. 3.2 Eq. 5-6).

* :mod:`.build`: SAM of each size (registry) and checked checkpoint loading;
* :mod:`.prompts`: coarse mask -> mask logits, boxes, points;
* :mod:`.multiscale`: multi-scale prompt learner (Eq. 5) and mask decoder (Eq. 6 branches);
* :mod:`.cascade`: the CLIP-SAM cascade, batched over images;
* :mod:`.losses`: the segmentation loss (Eq. 6) of the branches.
"""
from samllava.sam.build import SAM_REGISTRY, build_sam
from samllava.sam.cascade import PROMPTS, SamCascade, SamOutput, build_cascade, place_cascade
from samllava.sam.multiscale import MultiScaleMaskDecoder, MultiScalePromptLearner
from samllava.sam.prompts import boxes_from_mask, mask_to_logits, points_from_mask, resize_pad_mask

__all__ = [
    "PROMPTS", "SAM_REGISTRY", "MultiScaleMaskDecoder", "MultiScalePromptLearner", "SamCascade", "SamOutput",
    "boxes_from_mask", "build_cascade", "build_sam", "mask_to_logits", "place_cascade", "points_from_mask",
    "resize_pad_mask",
]
