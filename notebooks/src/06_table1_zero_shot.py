# %% [markdown]
# # 06 · Table 1: zero-shot, trained on one data set and tested on the other
#
# *SAM-LLaVA*, Sec. 5.1.1, Table 1 (paper: VisA → MVTec-AD 94.8 / 95.6, MVTec-AD → VisA 86.9 / 95.7, image / pixel
# AUROC). Detection metrics depend only on the coarse stage and SAM, so the SAM side is trained on the source
# data set (Eq. 6) and the model is tested without any support image on the target. Baselines are measured in
# the same harness: the WinCLIP-style zero-shot CLIP map. With `data_roots` holding `mvtec` and `visa` the real
# data sets are used; otherwise synthetic stand-ins (textures vs objects), labelled as such.
#
# **Offline profile:** CLIP has random weights (no package ships CLIP), so the zero-shot map carries no learned
# notion of a defect. Its AUROC follows simple image statistics of the stand-ins and can land far from 50 either
# way: above 50 where defects are brighter or rougher than their surface, below 50 where the map ranks defect
# pixels under normal ones; neither says anything about the method. SAM-LLaVA's image AUROC equals the zero-shot
# map's by construction (its image score is the coarse stage's); its pixel AUROC differs because its SAM side was
# trained on the source stand-in's masks. The paper profile runs the real path.

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
steps = 150
lr = 1e-3
train_seeds = [0, 1, 2]  # one SAM side per seed and direction; SAM-LLaVA's row is their mean and std (issue #19)

# %%
from samllava.core import results
from samllava.core.config import load_profile
from samllava.notebook.tables import cross_domain_sets, table1_note, training_seeds_note, zero_shot_table
from samllava.core.provenance import provenance
from samllava.report.claims import claims_frame
from samllava.report.runs import RunLog

P = load_profile(profile)
sets = cross_domain_sets(P, data_roots)
run = provenance(profile=P, data={f"{name} ({part})": d for name, pair in sets.items() for part, d in zip(("train", "test"), pair)},
                 seeds={"training": train_seeds})
values = RunLog()
table = zero_shot_table(P, data_roots, steps=steps, lr=lr, device=device, train_seeds=train_seeds, runs=values)
real = "mvtec" in data_roots and "visa" in data_roots
results.write_table(values.frame(), "table1_zero_shot_runs", run=run,
                    dataset="MVTec-AD and VisA" if real else "synthetic stand-ins (textures, objects), not MVTec-AD/VisA",
                    note="the values table1_zero_shot pools: AUROC in percent per direction, category and training seed")
results.write_table(table, "table1_zero_shot", run=run,
                    dataset="MVTec-AD and VisA" if real else "synthetic stand-ins (textures, objects), not MVTec-AD/VisA",
                    note=f"{table1_note(P, steps, lr, real)}; {training_seeds_note(train_seeds)}")
table

# %% [markdown]
# ## What this says about the paper's claims (their rows of `results/CLAIMS.md`)
# Each difference is paired over direction, category and training seed, with a 95 % bootstrap interval; a row this
# profile cannot test says why.

# %%
claims_frame(notebook="06")
