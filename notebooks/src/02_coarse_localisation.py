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

    subprocess.run("(test -d /content/samllava || git clone --depth 1 https://github.com/OWNER/samllava /content/samllava)"
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
from IPython.display import display

from samllava.core import results
from samllava.core.config import load_profile
from samllava.evaluate.harness import CoarseMethod
from samllava.notebook.tables import coarse_figure, fewshot_benchmark, synthetic, textiles
from samllava.core.provenance import provenance
from samllava.notebook.widgets import heatmap_explorer

P = load_profile(profile)
method = CoarseMethod(P, device=device)
data = synthetic(P, "eval")
run = provenance(profile=P, data={"synthetic eval": data}, seeds=seeds)

# %% [markdown]
# ## Heatmaps and masks, zero-shot vs few-shot

# %%
fig, terms = coarse_figure(method.coarse, data, n=n_examples, shots=1, size=P.data.image_size)
results.save_figure(fig, "coarse_heatmaps", run=run)
terms

# %% [markdown]
# ## Explore (JupyterLab): category, image, K, memory level, threshold
# The panel draws its first view itself; every control redraws it with the same code. From left to right: the image
# (with the heatmap on top, "heatmap on image"), the map with a colour bar in its own units, the mask and the ground
# truth. The threshold slider spans the shown map's values; its value is the cyan mark on the colour bar and the mask's
# outline on the map. Moving it switches from Otsu to that manual threshold. The status line names the image's label,
# the score, the verdict (n/a until a calibrated score threshold exists) and the active terms.

# %%
explorer = heatmap_explorer(method.coarse, data, n_levels=len(P.fewshot.layers), size=P.data.image_size)
results.save_figure(explorer.figure(), "coarse_explorer_view", run=run)
display(explorer.widget)

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
