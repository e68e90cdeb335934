# %% [markdown]
# # 09 · Figure 5: segmentation of the compared methods and the coarse heatmap
#
# *SAM-LLaVA*, Sec. 5.2, Fig. 5: input, ground truth, masks of the compared methods (here measured in the same
# harness: WinCLIP-style zero-shot, PatchCore-style k-NN, coarse only), SAM-LLaVA's fine mask, and the coarse
# heatmap. Masks of map-based methods are Otsu's binarisation of their maps.

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
steps = None  # None: the profile's SAM warm-up budget, one cached SAM side shared by notebooks 03, 05, 07-09
lr = None
n_examples = 4

# %%
from samllava.core import results
from samllava.core.config import load_profile
from samllava.notebook.tables import segmentation_comparison_figure, synthetic, train_cascade
from samllava.core.provenance import provenance

P = load_profile(profile)
data = synthetic(P, "eval")
run = provenance(profile=P, data={"synthetic train": synthetic(P, "train"), "synthetic eval": data}, seeds=[0])
coarse, cascade, _ = train_cascade(P, steps=steps, lr=lr, shots=1, progress=False, device=device)
fig = segmentation_comparison_figure(P, coarse, cascade, data, n=n_examples, data_label="synthetic held-out images")
results.save_figure(fig, "fig5_segmentation", run=run, note="not comparable with the paper")
