# %% [markdown]
# # 06 · Table 1: zero-shot, trained on one data set and tested on the other
#
# *SAM-LLaVA*, Sec. 5.1.1, Table 1 (paper: VisA → MVTec-AD 94.8 / 95.6, MVTec-AD → VisA 86.9 / 95.7, image / pixel
# AUROC). Detection metrics depend only on the coarse stage and SAM, so the SAM side is trained on the source
# data set (Eq. 6) and the model is tested without any support image on the target. Baselines are measured in
# the same harness: the WinCLIP-style zero-shot CLIP map. With `data_roots` holding `mvtec` and `visa` the real
# data sets are used; otherwise synthetic stand-ins (textures vs objects), labelled as such.
#
# **Offline profile:** CLIP has random weights (no package ships CLIP), so zero-shot maps are uninformative
# here: expect numbers near 50, which say nothing about the method. The paper profile runs the real path.

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
steps = 150
lr = 1e-3
train_seeds = [0, 1, 2]  # one SAM side per seed and direction; SAM-LLaVA's row is their mean and std (issue #19)

# %%
from samllava.core import results
from samllava.core.config import load_profile
from samllava.notebook.tables import cross_domain_sets, table1_note, training_seeds_note, zero_shot_table
from samllava.core.provenance import provenance

P = load_profile(profile)
sets = cross_domain_sets(P, data_roots)
run = provenance(profile=P, data={f"{name} ({part})": d for name, pair in sets.items() for part, d in zip(("train", "test"), pair)},
                 seeds={"training": train_seeds})
table = zero_shot_table(P, data_roots, steps=steps, lr=lr, device=device, train_seeds=train_seeds)
real = "mvtec" in data_roots and "visa" in data_roots
results.write_table(table, "table1_zero_shot", run=run,
                    dataset="MVTec-AD and VisA" if real else "synthetic stand-ins (textures, objects), not MVTec-AD/VisA",
                    note=f"{table1_note(P, steps, lr, real)}; {training_seeds_note(train_seeds)}")
table
