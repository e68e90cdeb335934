"""Build a notebook from a percent-format script (``# %%`` code cells, ``# %% [markdown]`` cells,
``# %% tags=["parameters"]`` for the papermill parameters cell).

The committed ``.ipynb`` files are the source of truth; this only saves typing JSON by hand:
``python tools/py2nb.py notebooks/src/01_data.py notebooks/01_data.ipynb``.
"""
import re
import sys

import nbformat


def convert(text: str):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    blocks = re.split(r"^# %%(.*)$", text, flags=re.M)
    for header, body in zip(blocks[1::2], blocks[2::2]):
        body = body.strip("\n")
        if "[markdown]" in header:
            body = "\n".join(ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in body.splitlines())
            nb.cells.append(nbformat.v4.new_markdown_cell(body))
        else:
            cell = nbformat.v4.new_code_cell(body)
            tags = re.search(r'tags=\[(.*?)\]', header)
            if tags:
                cell.metadata["tags"] = [t.strip().strip('"\'') for t in tags.group(1).split(",")]
            nb.cells.append(cell)
    return nb


if __name__ == "__main__":
    src, dst = sys.argv[1], sys.argv[2]
    nbformat.write(convert(open(src).read()), dst)
