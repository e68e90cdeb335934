"""samllava: a reproducible implementation of SAM-LLaVA (segmentation-aware vision-language
defect diagnosis). Stages: coarse (CLIP + few-shot memory), sam (cascade, multi-scale), sasa,
describe (LLaVA + LoRA), model (assembled), train, metrics, reproduce."""

__version__ = "0.1.0"

from samllava.core.config import Profile, load_profile  # noqa: E402,F401
