"""Launch badges (Binder, Colab) for every notebook, and the repository address they and the notebooks use.

The address has one home, ``[project.urls] Repository`` in pyproject.toml; everything else is written from
it here. Neither Binder nor Colab accepts a relative link (each needs the GitHub owner and name in its
address), so the badges of docs/launch.md are generated, and the first code cell of every numbered notebook
(:data:`COLAB_CELL`, in notebooks/src/*.py and the .ipynb) holds the address in one line, ``repository =
"..."``, that it clones on Google Colab. While the address is the placeholder (:data:`PLACEHOLDER`) that cell
stops with a message saying how to set it, instead of a failing ``git clone``.

    python tools/launch.py                 # rewrite docs/launch.md from pyproject.toml
    python tools/launch.py --check         # exit 1 when docs/launch.md or a notebook is out of step
    python tools/launch.py --repo https://github.com/USER/samllava   # a fork: set the address everywhere
    python tools/launch.py --repo origin   # the same, from `git remote get-url origin`
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_MD = ROOT / "docs" / "launch.md"
NOTEBOOKS = ROOT / "notebooks"
BRANCH = "main"
COLAB_MARK = '"google.colab" in sys.modules'  # the guard of the install cell
PLACEHOLDER = "https://github.com/OWNER/samllava"  # pyproject's address until the repository is published
# The first code cell of every numbered notebook, as its notebooks/src/*.py writes it ({url}: the address).
COLAB_CELL = """import sys

if "google.colab" in sys.modules:  # Colab only: clone this repository and install its pinned stack (~5 min)
    import subprocess

    repository = "{url}"  # pyproject.toml [project.urls] Repository, via tools/launch.py
    if "/OWNER/" in repository:
        raise RuntimeError("this copy does not name its GitHub repository yet: set `repository` in this cell "
                           "(a fork: python tools/launch.py --repo origin)")
    subprocess.run(f"(test -d /content/samllava || git clone --depth 1 {{repository}} /content/samllava)"
                   " && bash /content/samllava/tools/colab_install.sh", shell=True, check=True)
    sys.path.insert(0, "/content/samllava")"""

INTRO = """# Run the notebooks without installing anything

<!-- written by tools/launch.py from pyproject.toml ([project.urls] Repository); do not edit by hand -->

- **Binder** builds `binder/` (the pins of `requirements.txt`, CPU-only torch); the first launch after a change
  takes tens of minutes. Its 1-2 GB need `profile = "tiny"` (`offline` peaks at about 7 GB).
- **Colab**: each notebook's first code cell clones the repository into `/content/samllava` and installs the
  pins (about 5 minutes; elsewhere it does nothing). Colab's 12 GB run `offline`; a GPU runtime runs `paper`.
- **The address** is `[project.urls] Repository` in `pyproject.toml`; neither service takes a relative link,
  so the badges and the Colab cells are written from it. A fork runs `python tools/launch.py --repo origin`
  (or `--repo https://github.com/USER/samllava`) and commits; while it reads `OWNER`, the Colab cell says so.
"""


def repository() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"].rstrip("/")


def origin() -> str:
    """The https address of git's ``origin`` remote (https or ssh form), for ``--repo origin``."""
    got = subprocess.run(["git", "-C", str(ROOT), "remote", "get-url", "origin"], capture_output=True, text=True)
    if got.returncode != 0:
        raise SystemExit("--repo origin: this clone has no git remote 'origin'; pass --repo https://github.com/USER/NAME")
    m = re.fullmatch(r"(?:https://github\.com/|git@github\.com:|ssh://git@github\.com/)([^/]+/[^/]+?)(?:\.git)?/?",
                     got.stdout.strip())
    if not m:
        raise SystemExit(f"--repo origin: {got.stdout.strip()} is not a GitHub address; pass --repo "
                         "https://github.com/USER/NAME")
    return f"https://github.com/{m.group(1)}"


def _slug(url: str) -> str:
    m = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)(\.git)?", url)
    if not m:
        raise SystemExit(f"{url}: expected https://github.com/USER/NAME")
    return m.group(1)


def _title(book: Path) -> str:
    """The notebook's title up to its colon ("02 · Coarse localisation"): the README's table says the rest."""
    first = json.loads(book.read_text())["cells"][0]
    return "".join(first["source"]).splitlines()[0].lstrip("# ").split(":")[0].strip()


def launch_md(url: str) -> str:
    slug = _slug(url)
    rows = ["| notebook | Binder | Colab |", "|---|---|---|"]
    for book in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        path = f"notebooks/{book.name}"
        binder = f"https://mybinder.org/v2/gh/{slug}/{BRANCH}?labpath={path.replace('/', '%2F')}"
        colab = f"https://colab.research.google.com/github/{slug}/blob/{BRANCH}/{path}"
        rows.append(f"| [{_title(book)}](../{path}) | [![Binder](https://mybinder.org/badge_logo.svg)]({binder}) "
                    f"| [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab}) |")
    return INTRO + "\n" + "\n".join(rows) + "\n"


def notebook_files() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")) + sorted((NOTEBOOKS / "src").glob("[0-9][0-9]_*.py"))


def colab_cell(path: Path) -> str | None:
    """The Colab cell of a notebook (.ipynb) or of its source (.py), or None."""
    if path.suffix == ".ipynb":
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        sources = ["".join(c["source"]) for c in cells]
    else:
        sources = [block.strip("\n") for block in re.split(r"^# %%.*$", path.read_text(), flags=re.M)]
    return next((src for src in sources if COLAB_MARK in src), None)


def problems(url: str) -> list[str]:
    """What is out of step with ``url``: docs/launch.md, or a notebook whose Colab cell is not :data:`COLAB_CELL`."""
    found = []
    if not LAUNCH_MD.is_file() or LAUNCH_MD.read_text() != launch_md(url):
        found.append(f"{LAUNCH_MD.relative_to(ROOT)} is out of step: run python tools/launch.py")
    for path in notebook_files():
        if colab_cell(path) != COLAB_CELL.format(url=url):
            found.append(f"{path.relative_to(ROOT)}: its Colab cell is not tools/launch.py's COLAB_CELL for {url}")
    return found


def set_repository(old: str, new: str) -> None:
    """Replace the address in pyproject.toml and in every notebook's Colab cell."""
    _slug(new)
    project = ROOT / "pyproject.toml"
    project.write_text(project.read_text().replace(f'Repository = "{old}"', f'Repository = "{new}"'))
    for path in notebook_files():
        # the address stands alone in the cell's `repository = "..."` line (quotes escaped in the JSON)
        path.write_text(re.sub(rf'(repository = \\?"){re.escape(old)}(\\?")', rf"\g<1>{new}\g<2>", path.read_text()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repo", help="set the repository address everywhere: https://github.com/USER/NAME, or origin "
                                  "(git's remote of that name)")
    p.add_argument("--check", action="store_true", help="only report what is out of step")
    args = p.parse_args(argv)
    if args.repo:
        set_repository(repository(), origin() if args.repo == "origin" else args.repo.rstrip("/"))
    url = repository()
    if args.check:
        found = problems(url)
        print("\n".join(found) or "launch badges and Colab cells in step")
        return 1 if found else 0
    LAUNCH_MD.write_text(launch_md(url))
    print(f"wrote {LAUNCH_MD.relative_to(ROOT)} for {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
