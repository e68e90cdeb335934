"""``python -m samllava.train ARGS`` is ``samllava train ARGS`` (kept for ``torchrun -m samllava.train``)."""
import sys

from ..cli import main

sys.exit(main(["train", *sys.argv[1:]]))
