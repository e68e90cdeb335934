"""Stage 1, coarse localisation (Sec. 3.1, Eq. 1-2): CLIP zero-shot heatmap, few-shot memory
calibration (Lambda), Otsu's coarse mask."""
from samllava.coarse.memory import FewShotCalibrator, knn_anomaly_map  # noqa: F401
from samllava.coarse.otsu import otsu_masks, otsu_threshold  # noqa: F401
from samllava.coarse.prompts import category_phrase, prompt_sentences  # noqa: F401
from samllava.coarse.stage import CoarseLocalizer, CoarseOutput, build_coarse  # noqa: F401
from samllava.coarse.zero_shot import TextCache, ZeroShotLocalizer  # noqa: F401
