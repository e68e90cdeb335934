"""Launch badges (Binder, Colab) for every notebook, and the repository address they and the notebooks use.

The address is ``[project.urls] Repository`` in pyproject.toml. The first code cell of every notebook
(notebooks/src/*.py and the .ipynb) clones it on Google Colab; docs/launch.md has one Binder and one
Colab badge per notebook pointing at it.

    python tools/launch.py                 # rewrite docs/launch.md from pyproject.toml
    python tools/launch.py --check         # exit 1 when docs/launch.md or a notebook is out of step
    python tools/launch.py --repo https://github.com/USER/samllava   # a fork: set the address everywhere
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_MD = ROOT / "docs" / "launch.md"
NOTEBOOKS = ROOT / "notebooks"
BRANCH = "main"
COLAB_MARK = '"google.colab" in sys.modules'  # the guard of the install cell

INTRO = """# Run the notebooks without installing anything

<!-- written by tools/launch.py from pyproject.toml ([project.urls] Repository); do not edit by hand -->

- **Binder** builds the environment from `binder/environment.yml` (the pinned stack of `requirements.txt`,
  CPU-only torch) and `binder/postBuild`. The first launch after a change builds the image (tens of minutes);
  later launches start from the cache. Binder gives 1-2 GB of memory: set `profile = "tiny"` in the
  parameters cell (the `offline` profile peaks at about 7 GB).
- **Colab**: the first code cell of every notebook clones this repository into `/content/samllava` and
  installs the pinned stack into the runtime (about 5 minutes; on Binder or your own machine the cell does
  nothing). Colab's 12 GB run the `offline` profile; a GPU runtime can run the `paper` profile once the
  weights and data are fetched (`docs/weights-and-data.md`).
- A fork points the badges and the Colab cell at itself with `python tools/launch.py --repo https://github.com/USER/samllava`.
"""


def repository() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"].rstrip("/")


def _slug(url: str) -> str:
    m = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)(\.git)?", url)
    if not m:
        raise SystemExit(f"{url}: expected https://github.com/USER/NAME")
    return m.group(1)


def _title(book: Path) -> str:
    first = json.loads(book.read_text())["cells"][0]
    return "".join(first["source"]).splitlines()[0].lstrip("# ").strip()


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


def problems(url: str) -> list[str]:
    """What is out of step with ``url``: docs/launch.md, or a notebook without the Colab cell cloning it."""
    found = []
    if not LAUNCH_MD.is_file() or LAUNCH_MD.read_text() != launch_md(url):
        found.append(f"{LAUNCH_MD.relative_to(ROOT)} is out of step: run python tools/launch.py")
    for path in notebook_files():
        text = path.read_text()
        if COLAB_MARK.replace('"', '\\"' if path.suffix == ".ipynb" else '"') not in text or f"{url} " not in text:
            found.append(f"{path.relative_to(ROOT)}: no Colab install cell cloning {url}")
    return found


def set_repository(old: str, new: str) -> None:
    """Replace the address in pyproject.toml and in every notebook's Colab cell."""
    _slug(new)
    for path in [ROOT / "pyproject.toml"] + notebook_files():
        path.write_text(path.read_text().replace(f'"{old}"', f'"{new}"').replace(f"{old} ", f"{new} "))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repo", help="set the repository address (https://github.com/USER/NAME) everywhere")
    p.add_argument("--check", action="store_true", help="only report what is out of step")
    args = p.parse_args(argv)
    if args.repo:
        set_repository(repository(), args.repo.rstrip("/"))
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
