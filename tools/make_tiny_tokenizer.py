"""Train the tiny tokenizer of the ``tiny`` profile, offline and deterministically.

The tiny describer needs a tokenizer but no hub is reachable, so we train a small byte-level BPE
with the ``tokenizers`` library on text generated from word lists of the defect-diagnosis domain
(questions, yes/no answers, defect words, positions, colours, shapes, category names) and wrap it
in :class:`transformers.PreTrainedTokenizerFast`. Byte-level BPE represents every string, so a
word outside the corpus costs more tokens but never becomes ``<unk>``.

Run ``python -m make_tiny_tokenizer`` to regenerate
``samllava/assets/tiny_tokenizer`` (the committed files come from this script).
"""
from __future__ import annotations

import argparse
import itertools
import os
import shutil
import tempfile
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from samllava.data.instructions import ANSWER_ANOMALY, ANSWER_NORMAL, POSITIONS, QUESTION
from samllava.describe.template import ASSISTANT, SYSTEM, USER

ASSET_DIR = Path(__file__).resolve().parent.parent / "samllava" / "assets" / "tiny_tokenizer"
SPECIAL_TOKENS = ("<s>", "</s>", "<pad>", "<unk>", "<image>", "<sasa>")  # ids 0..5, in this order
VOCAB_SIZE = 768

# Word lists: the data of the corpus. MVTec-AD and VisA category names (datasets.md).
CATEGORIES = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal nut", "pill", "screw",
    "tile", "toothbrush", "transistor", "wood", "zipper", "candle", "capsules", "cashew", "chewing gum",
    "fryum", "macaroni", "pcb", "pipe fryum", "fabric", "textile", "steel surface", "road", "rail",
)
DEFECTS = (
    "scratch", "crack", "hole", "stain", "contamination", "dent", "cut", "bend", "break", "fold",
    "glue", "poke", "squeeze", "print", "thread", "missing part", "misplaced part", "color defect",
    "rough area", "chip", "burn", "spot", "bubble", "wrinkle", "tear", "deformation", "damage", "flaw",
)
COLOURS = ("black", "white", "gray", "brown", "red", "green", "blue", "yellow", "orange", "dark", "bright")
SHAPES = ("round", "linear", "irregular", "narrow", "small", "large", "elongated", "circular", "thin", "wide")
QUESTIONS = (
    "Is there any anomaly in the image?",
    "Is there any defect in the image?",
    "Describe the defect in the image.",
    "Where is the defect?",
    "What kind of defect is it?",
    QUESTION.format(category="{c}"),  # the question of the instruction records
)
NORMAL_ANSWERS = (ANSWER_NORMAL, "No.", "The {c} is normal and has no defect.")
DEFECT_ANSWERS = (
    ANSWER_ANOMALY.format(position="{p}"),
    "Yes. The {c} has a {s} {k} {d} at the {p}.",
    "There is a {s}, {k} {d} at the {p} of the {c}, with sharp edges and depth contrast.",
)


def corpus() -> list[str]:
    """Deterministic training text: every template filled with every combination of its words."""
    lines = [SYSTEM]
    for c in CATEGORIES:
        # Whole turns in the describer's template, so "USER:" and "ASSISTANT:" become merges too.
        lines += [
            f"{SYSTEM} {USER} {q.format(c=c)} {ASSISTANT} {a.format(c=c)}" for q in QUESTIONS for a in NORMAL_ANSWERS
        ]
    # The full product is large: walk it with a fixed stride so every word appears in many contexts.
    combos = itertools.product(CATEGORIES, DEFECTS, POSITIONS, COLOURS, SHAPES)
    for i, (c, d, p, k, s) in enumerate(itertools.islice(combos, 0, None, 97)):
        lines.append(DEFECT_ANSWERS[i % len(DEFECT_ANSWERS)].format(c=c, d=d, p=p, k=k, s=s))
    return lines


def train_tokenizer(vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on :func:`corpus`, with the special tokens at ids 0..5."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is ever unknown
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        extra_special_tokens=["<image>", "<sasa>"],
        model_max_length=512,
    )


def write(directory: str | os.PathLike = ASSET_DIR, vocab_size: int = VOCAB_SIZE) -> Path:
    """Train and ``save_pretrained`` into ``directory``, replacing it atomically."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        train_tokenizer(vocab_size).save_pretrained(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the assets are ordinary repository files
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return directory


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ASSET_DIR), help="output folder")
    parser.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    args = parser.parse_args(argv)
    path = write(args.out, args.vocab_size)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
