"""Evaluation: one harness for every method (:mod:`.harness`), the language model's answers and their
accuracy (:mod:`.answers`), the description judge (:mod:`.judge`) and the complexity benchmark (:mod:`.bench`)."""
from samllava.evaluate.harness import CoarseMethod, FullMethod, evaluate

__all__ = ["CoarseMethod", "FullMethod", "evaluate"]
