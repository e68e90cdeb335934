#!/bin/bash
# Google Colab: the pinned stack and this package, into the runtime's Python. The first code cell of
# every notebook clones the repository and runs this (about 5 minutes); it does nothing elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet -r requirements.txt
bash binder/postBuild
