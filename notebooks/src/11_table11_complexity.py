# %% [markdown]
# # 11 · Table 11: computational complexity
#
# *SAM-LLaVA*, Sec. 5.3.5: total, trainable and LoRA parameters, training time, latency at batch 1 averaged
# over N runs after M warm-ups (paper: 200 after 50, on an L40), throughput and peak memory. Measured here for
# the chosen profile on this machine's device; the paper profile's parameter counts come from its configuration
# (meta device, no weights). GPU numbers for the paper-size models are in `results/gpu_bench.json` when a GPU
# run was made (benchmarks/gpu_bench.py), and are never replaced by CPU numbers: those rows run the paper's
# architectures with random weights on the GPU the JSON names (shown in the `device` column), not this profile.

# %%
import sys

if "google.colab" in sys.modules:  # Colab only: clone this repository and install its pinned stack (~5 min)
    import subprocess

    repository = "https://github.com/OWNER/samllava"  # pyproject.toml [project.urls] Repository, via tools/launch.py
    if "/OWNER/" in repository:
        raise RuntimeError("this copy does not name its GitHub repository yet: set `repository` in this cell "
                           "(a fork: python tools/launch.py --repo origin)")
    subprocess.run(f"(test -d /content/samllava || git clone --depth 1 {repository} /content/samllava)"
                   " && bash /content/samllava/tools/colab_install.sh", shell=True, check=True)
    sys.path.insert(0, "/content/samllava")

# %% tags=["parameters"]
profile = "offline"
data_roots = {}
device = None  # cpu, cuda, cuda:N; None: cuda when available, else cpu (samllava.core.device)
runs = 5
warmup = 1
new_tokens = 32
gpu_json = "../results/gpu_bench.json"  # the paper-size GPU benchmark (benchmarks/gpu_bench.py); None: leave out

# %%
from samllava.core import results
from samllava.core.config import load_profile
from samllava.core.device import resolve_device
from samllava.notebook.tables import complexity_table
from samllava.core.provenance import provenance
from samllava.report.claims import claims_frame

P = load_profile(profile)
device = str(resolve_device(device))
table = complexity_table(P, device=device, runs=runs, warmup=warmup, new_tokens=new_tokens, gpu_json=gpu_json)
results.write_table(table, "table11_complexity", run=provenance(profile=P, data="none (random inputs)", device=device),
                    note=f"this run: {device}, batch 1, latency over {runs} runs after {warmup} warm-up(s), {new_tokens} new "
                         "tokens; paper: L40, batch 1, 200 runs after 50; GPU rows (docs/gpu.md; provenance in the "
                         "JSON they name): batch 1 beside the paper's batch-1 row, then the batch with the best throughput",
                    float_format="{:.2f}")
table

# %% [markdown]
# ## What this says about the paper's claims (their rows of `results/CLAIMS.md`)
# Parameter counts are exact: supported within 1 % of the paper's. Timings on another GPU cannot test the paper's L40
# numbers; the rows show ours beside them and say why.

# %%
claims_frame(notebook="11")
