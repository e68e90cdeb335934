# %% [markdown]
# # 02 · Coarse localisation: CLIP zero-shot heatmaps, Otsu, few-shot calibration
#
# *SAM-LLaVA*, Sec. 3.1, Eq. 1-2. The zero-shot map H comes from CLIP patch tokens scored against a prompt
# ensemble; Otsu's threshold gives M_coarse. With K normal support images, a multi-level memory gives the
# context score s_ctx, Λ = σ(β(s_ctx − 1)) and H' = H ⊙ Λ.
#
# **Offline profile:** no package ships CLIP weights, so its CLIP is random and the zero-shot term is switched
# off (H := 1, H' = Λ); the memory uses the real ImageNet EfficientNet-Lite0. The outputs below say which terms
# were active. Zero-shot maps from random CLIP weights carry no information.

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
shots = [1, 2, 4]
seeds = [0, 1, 2]
n_examples = 4

# %%
from samllava.core import results
from samllava.core.config import load_profile
from samllava.evaluate.harness import CoarseMethod
from samllava.notebook.tables import coarse_figure, fewshot_benchmark, synthetic, textiles
from samllava.core.provenance import provenance

P = load_profile(profile)
method = CoarseMethod(P, device=device)
data = synthetic(P, "eval")
run = provenance(profile=P, data={"synthetic eval": data}, seeds=seeds)

# %% [markdown]
# ## Heatmaps and masks, zero-shot vs few-shot
# To explore the maps control by control (category, image, K, memory level, threshold), on this synthetic set or
# on your own MVTec-layout folder, open [explore_heatmaps.ipynb](explore_heatmaps.ipynb): it runs no benchmark.

# %%
fig, terms = coarse_figure(method.coarse, data, n=n_examples, shots=1, size=P.data.image_size)
results.save_figure(fig, "coarse_heatmaps", run=run)
terms

# %% [markdown]
# ## Few-shot image AUROC: calibrated map (Eq. 2) vs a plain PatchCore-style k-NN on the same backbone
# Mean over categories, mean ± std over the seeded support sets. The textile images (conformal-clip-data) have
# image labels only, so their pixel AUROC is not available.

# %%
sets = {"synthetic": data, "textiles": textiles()}
bench = fewshot_benchmark(P, sets, shots=shots, seeds=seeds, device=device)
results.write_table(bench, "coarse_fewshot_vs_knn", run=run, data=sets, dataset="synthetic (eval, seed 0); conformal-clip-data textiles",
                    note=f"terms: {terms}; seeds {seeds}")
bench
