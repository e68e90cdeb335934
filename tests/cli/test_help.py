"""Every command's help, walked: every option has help text, its default and (for a size) its unit; the
profiles are listed one line each; an option a profile requires says so. Building the parsers is light
(no torch), so `samllava --help` answers at once."""
import argparse
import re
import subprocess
import sys

import pytest

from samllava.cli import COMMANDS, build_parser
from samllava.cli.parsers import DESCRIPTION, PROFILE_LINES, TRAIN_SHOTS
from samllava.core.config import PROFILE_DIR, load_profile
from samllava.train.default_model import DEFAULT_SHOTS

PARSER = build_parser()
SUBCOMMANDS = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction)).choices
UNITS = {("evaluate", "--image-size"): "pixels", ("make-data", "--size"): "pixels",
         ("diagnose", "--max-new-tokens"): "tokens", ("diagnose", "--batch-size"): "images",
         ("evaluate", "--batch-size"): "images", ("train", "--micro-batch"): "images"}


def _options(name):
    return [a for a in SUBCOMMANDS[name]._actions if not isinstance(a, argparse._HelpAction)]


def test_every_command_has_a_parser_and_a_function():
    assert set(SUBCOMMANDS) == set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_help_default_and_unit(name):
    for action in _options(name):
        what = f"samllava {name} {'/'.join(action.option_strings) or action.dest}"
        assert action.help and len(action.help) > 15, f"{what}: no help text"
        takes_value = action.option_strings and action.nargs != 0
        if takes_value and not action.required and action.dest != "debug":
            assert "default" in action.help, f"{what}: the help does not state the default"
        if isinstance(action, argparse._StoreTrueAction) and action.dest != "debug":
            assert "default" in action.help, f"{what}: the help does not say what happens without it"
        for option in action.option_strings:
            if (name, option) in UNITS:
                assert UNITS[name, option] in action.help, f"{what}: no unit ({UNITS[name, option]})"


@pytest.mark.parametrize("name", sorted(n for n in COMMANDS if "--profile" in SUBCOMMANDS[n]._option_string_actions))
def test_profiles_listed_one_line_each(name):
    text = SUBCOMMANDS[name].format_help()
    names = sorted(p.stem for p in PROFILE_DIR.glob("*.json"))
    for profile in names:
        lines = [ln for ln in text.splitlines() if re.match(rf"^  {profile}\b", ln)]
        assert len(lines) == 1 and len(lines[0]) > 30, f"{name}: profile {profile} not on one line of its own"
    assert "(default)" in text and "--profile" in text
    assert "$SAMLLAVA_PROFILE" in SUBCOMMANDS[name]._option_string_actions["--profile"].help or name == "reproduce"


def test_profile_lines_name_every_profile_file():
    assert set(PROFILE_LINES) == {p.stem for p in PROFILE_DIR.glob("*.json")}
    assert TRAIN_SHOTS == DEFAULT_SHOTS


def test_options_a_profile_requires_say_so():
    support = SUBCOMMANDS["diagnose"]._option_string_actions["--support"].help
    shots = SUBCOMMANDS["evaluate"]._option_string_actions["--shots"].help
    for profile in ("tiny", "offline"):
        assert load_profile(profile).clip.weights is None  # no zero-shot signal: normal images needed
        assert profile in support and "Required" in support and profile in shots


def test_top_level_help_is_plain_text():
    assert not re.search(r":(mod|func|class):|``", DESCRIPTION)
    text = PARSER.format_help()
    assert "samllava diagnose" in text and "--checkpoint RUN" in text


def test_help_imports_no_torch():
    code = ("import sys; from samllava.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'transformers', 'open_clip', 'numpy', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    for name in [None, *COMMANDS]:
        run = subprocess.run([sys.executable, "-m", "samllava", *([name] if name else []), "--help"],
                             capture_output=True, text=True)
        assert run.returncode == 0 and "usage: samllava" in run.stdout and not run.stderr, name
