"""``samllava`` command line: diagnose, train, evaluate, reproduce, fetch-weights, fetch-data, make-data, bench,
compare-results, export.

Light on purpose, so that ``samllava --help`` answers at once: the parsers (:mod:`samllava.cli.parsers`)
and the argument checks (:mod:`samllava.cli.checks`) need no torch. A command's own module is imported
only when that command runs (:data:`COMMANDS`, ``"module:function"`` resolved by :mod:`importlib`).
``python -m samllava train`` is ``samllava train``.

Order of work: parse, check every path and number (:data:`samllava.cli.checks.CHECKS`), import the
command, then the command's own checks (images readable, a data set's layout), and only then load or
train a model. A failure a person can fix prints one line, ``samllava <command>: <what is wrong>``, and
exits with status 2. The libraries' warnings, log lines and loading bars stay quiet unless ``--debug``,
which also shows the traceback of an error.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import warnings
from typing import Callable, Iterator

from samllava.cli.checks import CHECKS, UsageError
from samllava.cli.parsers import build_parser

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS = {
    "diagnose": "samllava.cli.diagnose:diagnose_cli",
    "train": "samllava.cli.train:train_cli",
    "evaluate": "samllava.cli.evaluate:evaluate_cli",
    "reproduce": "samllava.cli.reproduce:reproduce_cli",
    "fetch-weights": "samllava.cli.fetch:fetch_weights_cli",
    "fetch-data": "samllava.cli.fetch_data:fetch_data_cli",
    "make-data": "samllava.cli.make_data:make_data_cli",
    "bench": "samllava.cli.bench:bench_cli",
    "compare-results": "samllava.cli.compare:compare_results_cli",
    "export": "samllava.export.command:export_cli",
}
# What a person can fix from the message alone: printed as one line, not a traceback. The project's own
# error classes are named, not imported, so that this module stays light; a class counts once its module
# has been imported (it cannot have been raised before).
USER_ERRORS = (UsageError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError, KeyError)
USER_ERROR_NAMES = ("samllava.assets.weights:MissingWeightsError", "samllava.assets.download:DownloadError",
                    "samllava.train.default_model:MissingModelError", "samllava.notebook.runner:ReproduceError")
# Loggers of the libraries under the models: quiet below ERROR unless --debug.
QUIET_LOGGERS = ("", "open_clip", "timm", "huggingface_hub", "transformers", "accelerate", "peft")


def user_errors() -> tuple[type[BaseException], ...]:
    """:data:`USER_ERRORS` and the named classes whose modules are imported by now."""
    named = (name.split(":") for name in USER_ERROR_NAMES)
    return USER_ERRORS + tuple(getattr(sys.modules[m], c) for m, c in named if m in sys.modules)


def resolve(target: str):
    """The function a ``"module:function"`` string names (its module imported now)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@contextlib.contextmanager
def quiet_libraries(debug: bool) -> Iterator[Callable[[], None]]:
    """While a command runs (and unless ``debug``): the libraries' warnings and log lines below ERROR off
    (open_clip's "No pretrained weights loaded", transformers' FutureWarnings and "Loading weights" bars);
    the project's own warnings stay. Yields what to call once the command's modules are imported
    (transformers sets its own level and bars on import). Everything is restored afterwards, so a caller of
    :func:`main` in the same process (a test, a notebook) keeps its own settings."""
    if debug:
        yield lambda: None
        return
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    restore = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        warnings.filterwarnings("default", module=r"samllava(\.|$)")
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            yield lambda: restore.append(_quiet_transformers())
        finally:
            for undo in restore:
                undo()
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def _quiet_transformers() -> Callable[[], None]:
    """transformers' log level to ERROR and its progress bars off; returns what sets them back."""
    tf = sys.modules.get("transformers.utils.logging")
    if tf is None:
        return lambda: None
    level, bars = tf.get_verbosity(), tf.is_progress_bar_enabled()
    tf.set_verbosity_error()
    tf.disable_progress_bar()

    def undo() -> None:
        tf.set_verbosity(level)
        if bars:
            tf.enable_progress_bar()

    return undo


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with quiet_libraries(args.debug) as imported:
            CHECKS[args.command](args)
            run = resolve(COMMANDS[args.command])
            imported()
            return run(args)
    except user_errors() as err:
        if args.debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"samllava {args.command}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
