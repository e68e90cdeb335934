"""Two runs with one seed on one machine write the same table bytes (issue #15, item 7).

The coarse map's pixel AUROC once moved in the fourth decimal between two runs of notebook 02: the CPU
thread count decides the order of float sums in the backbone's convolutions and matrix products, and the
equal-width histogram turned those 1e-7 differences into 1e-4 (crowded bins, see samllava.metrics.refine).
Each run here is a fresh process, as a notebook kernel is, with the thread count samllava.notebook.runner pins.
"""
import os
import subprocess
import sys

import pytest

from samllava.core.results import table_body

pytestmark = pytest.mark.slow  # make test-slow (docs/benchmarks.md: the two tiers)

CODE = """
import sys
from pathlib import Path
from samllava.core import results
from samllava.core.config import load_profile
from samllava.notebook.tables import fewshot_benchmark, synthetic
from samllava.core.provenance import provenance
P = load_profile("tiny")
data = synthetic(P, "eval")
table = fewshot_benchmark(P, {"synthetic": data}, shots=[1], seeds=[0, 1])
results.write_table(table, "coarse_fewshot_vs_knn", run=provenance(profile=P, data={"synthetic": data}, seeds=[0, 1]),
                    directory=Path(sys.argv[1]))
"""


def test_same_seed_same_table_bytes_in_two_processes(tmp_path):
    env = {**os.environ, "SAMLLAVA_DATA_DIR": str(tmp_path / "data"), "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2",
           "MKL_DYNAMIC": "FALSE"}
    paths = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        run = subprocess.run([sys.executable, "-c", CODE, str(out)], env=env, capture_output=True, text=True,
                             timeout=900)
        assert run.returncode == 0, run.stderr[-3000:]
        paths.append(out / "coarse_fewshot_vs_knn.csv")
    assert table_body(paths[0]) == table_body(paths[1])  # the headers may differ: they carry the date
    assert table_body(paths[0]).count(b"\n") == 3  # the column names and a row per method
