# %% [markdown]
# # 10 · Tables 7-10: ablations
#
# *SAM-LLaVA*, Sec. 5.3: w/o CLIP-SAM cascade (SAM without the CLIP prompt), w/o multi-scale prompt, w/o
# multi-scale decoder, single-scale SAM, w/o SASA, and mask vs box vs point prompts; 1-shot. Each variant is a
# configuration change of the same code. Image and pixel AUROC come from the coarse stage and SAM, trained per
# variant (SAM side, Eq. 6); every image score is the maximum of its row's pixel map, so SAM affects it. Tables 7, 8
# and 10 compare SAM's segmentation, so the cascade, multi-scale and prompt variants are scored on SAM's own output
# (its mask logits) and compared with the full model scored alike (the row "scored on SAM's output alone"); a mean
# with the coarse map H' would dilute a change to SAM. The full model's own row and "w/o SASA" (which keeps the
# full model's SAM side, so equals it by construction) are scored on the mean of H' and SAM. Description accuracy needs end-to-end training per variant: `accuracy_variants` lists the variants
# trained end to end with the profile's budget (the full variant is notebook 05's model, cached; on a CPU only the
# SASA ablation of Table 9 is trained by default), scored on `per_label` normal and anomalous images per category.
# Where the answer's yes/no is the calibrated verdict's (the offline profile), every variant would score the full
# model's accuracy, so only the full model's is measured (`accuracy_variants_for`). Every SAM side is trained once
# per training seed (`train_seeds`); the AUROCs are their mean, with the std in the `_std` columns.

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
seeds = [0, 1, 2]  # support seeds
train_seeds = [0, 1, 2]
accuracy_variants = ["SAM-LLaVA (full)", "w/o SASA"]
per_label = 6

# %%
from samllava.core import results
from samllava.core.config import load_profile
from samllava.notebook.tables import (
    ablation_note, ablation_table, accuracy_variants_for, answer_training_seeds, synthetic,
)
from samllava.core.provenance import provenance
from samllava.report.claims import claims_frame
from samllava.report.runs import RunLog

P = load_profile(profile)
data = synthetic(P, "eval")
run = provenance(profile=P, data={"synthetic train": synthetic(P, "train"), "synthetic eval": data},
                 seeds={"support": seeds, "training": train_seeds})
values = RunLog()
table = ablation_table(P, data, steps=steps, lr=lr, seeds=seeds, accuracy_variants=accuracy_variants,
                       per_label=per_label, device=device, train_seeds=train_seeds, runs=values)
results.write_table(values.frame(), "tables7_10_ablations_runs", run=run, dataset="synthetic (held-out)",
                    note="the values Tables 7-10 pool: percent per variant, scoring (scored_on), training seed, support "
                         "seed and category; the full model appears once per scoring")
results.write_table(table, "tables7_10_ablations", run=run, dataset="synthetic (held-out); paper: MVTec-AD and VisA",
                    note=ablation_note(seeds, steps, lr, P.train.epochs, accuracy_variants_for(P, accuracy_variants),
                                       per_label, train_seeds, answer_training_seeds(P, train_seeds)))
table

# %% [markdown]
# ## What this says about the paper's claims (their rows of `results/CLAIMS.md`)
# One row per variant and metric of Tables 7-10: the variant minus the full model scored alike, paired over training
# seed, support seed and category, with a 95 % bootstrap interval. *Supported* where the interval lies below 0 as the
# paper's drop does, *contradicted* where it lies above; a row this profile cannot test says why.

# %%
claims_frame(notebook="10")
