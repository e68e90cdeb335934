"""Stage 3: aligning the mask with the text (SASA) and describing the defect with LLaVA (Sec. 3.3-3.4).

* :mod:`.sasa`     - Segmentation-Aware Semantic Alignment, the bidirectional cross-attention (Eq. 7-8).
* :mod:`.wording`  - the mask in words, read by the language model before the question.
* :mod:`.template` - the one conversation template (LLaVA-1.5 USER/ASSISTANT, placeholders).
* :mod:`.llava`    - :class:`~.llava.Describer` (Eq. 10 loss, generation).
* :mod:`.build`    - :func:`~.build.build_describer`: a profile's describer (a new LLaVA around a causal LM,
  or a HF LLaVA).
* :mod:`.lora`     - LoRA on the language model only, parameter counts, adapter save/load.
* :mod:`.lookup_decode` - greedy decoding that drafts its next tokens from the text so far.
"""
