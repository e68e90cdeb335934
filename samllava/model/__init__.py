"""SAM-LLaVA assembled (:mod:`.sam_llava`), the file of its trainable weights (:mod:`.checkpoint`) and a
data set with its frozen part encoded once (:mod:`.encoded_data`)."""
from samllava.model.sam_llava import Diagnosis, Encoded, SamLlava, build_model

__all__ = ["Diagnosis", "Encoded", "SamLlava", "build_model"]
