"""Stage 3: describing the defect with LLaVA (Sec. 3.3-3.4).

* :mod:`.template` - the one conversation template (LLaVA-1.5 USER/ASSISTANT, placeholders).
* :mod:`.llava`    - :class:`~.llava.Describer` (Eq. 10 loss, generation).
* :mod:`.build`    - :func:`~.build.build_describer`: a profile's describer (a new LLaVA around a causal LM,
  or a HF LLaVA).
* :mod:`.lora`     - LoRA on the language model only, parameter counts, adapter save/load.
* :mod:`.make_tiny_tokenizer` - regenerates ``samllava/assets/tiny_tokenizer``.
"""
