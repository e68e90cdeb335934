
import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

# Whatever a test writes through samllava.core.results without naming a folder lands here, never over the
# committed results/ and figures/ (set before samllava.core.results is imported, which reads them once).
_SCRATCH = tempfile.mkdtemp(prefix="samllava-tests-")
os.environ.setdefault("SAMLLAVA_RESULTS_DIR", os.path.join(_SCRATCH, "results"))
os.environ.setdefault("SAMLLAVA_FIGURES_DIR", os.path.join(_SCRATCH, "figures"))
os.environ.setdefault("SAMLLAVA_EXECUTED_DIR", os.path.join(_SCRATCH, "executed"))

# The scripts of tools/ and benchmarks/ are tested by importing them by name.
_ROOT = Path(__file__).resolve().parent.parent
for _folder in ("tools", "benchmarks"):
    if str(_ROOT / _folder) not in sys.path:
        sys.path.insert(0, str(_ROOT / _folder))

# Keep the suite deterministic and light on a 2-core machine (small ops run fastest on one thread).
torch.set_num_threads(1)  # tiny tensors: one thread avoids oversubscription overhead


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy",
                   "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture
def fileserver(monkeypatch):
    """A file server on 127.0.0.1 (tests/fileserver.py), reached directly: proxy variables are cleared."""
    from tests.fileserver import FileServer

    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    server = FileServer()
    yield server
    server.close()
