# %% [markdown]
# # 03 · Fine segmentation: the CLIP→SAM cascade, multi-scale prompt learner and decoder
#
# *SAM-LLaVA*, Sec. 3.1 (Eq. 3-4) and Sec. 3.2 (Eq. 5-6). The coarse mask becomes a SAM mask prompt (low-res
# logits, +c inside / −c outside), SAM proposes candidate masks with predicted IoU, the best one is M_fine.
# Here only the SAM side is trained (prompt encoder, mask decoder, multi-scale parts; image encoder frozen) on
# the synthetic training set, and evaluated on the held-out synthetic set.
#
# **Offline profile:** no package ships SAM weights, so SAM's image encoder is a stand-in: the frozen
# ImageNet EfficientNet-Lite0 of the few-shot memory with a trained adapter; its prompt encoder and mask decoder
# start random and are trained here. The paper fine-tunes a pretrained ViT-H SAM. The learning rate and step
# budget below fit a CPU, not the paper's 50 epochs at 1e-4.

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
shots = 1
seeds = [0, 1, 2]  # support seeds
train_seeds = [0, 1, 2]  # one SAM side trained per seed; the table is their mean and std (issue #19)
n_examples = 3

# %%
from samllava.core import results
from samllava.core.config import load_profile
from samllava.evaluate.harness import CoarseMethod
from samllava.notebook.tables import (
    cascade_figure, prompt_types_figure, segmentation_table, synthetic, train_cascade, training_seeds_note,
    with_training_seed,
)
from samllava.core.provenance import provenance
from samllava.report.claims import claims_frame
from samllava.report.figures import loss_figure
from samllava.report.runs import RunLog

P = load_profile(profile)
data = synthetic(P, "eval")
run = provenance(profile=P, data={"synthetic train": synthetic(P, "train"), "synthetic eval": data},
                 seeds={"support": seeds, "training": train_seeds})
coarse = CoarseMethod(P, device=device)  # the coarse stage never trains: one for every training seed
trained = {s: train_cascade(with_training_seed(P, s), steps=steps, lr=lr, shots=shots, coarse=coarse)[1:]
           for s in train_seeds}
cascade, losses = trained[train_seeds[0]]  # the figures show the first training seed's SAM side
results.save_figure(loss_figure({f"Eq. 6, training seed {s}": l for s, (_, l) in trained.items()}), "sam_training_loss",
                    run=run)

# %% [markdown]
# ## Coarse mask → prompt → candidate masks (predicted IoU in the row title) → fine mask

# %%
results.save_figure(cascade_figure(coarse, cascade, data, n=n_examples, shots=shots), "cascade_steps", run=run)

# %% [markdown]
# ## Prompt types side by side (the same trained SAM)

# %%
results.save_figure(prompt_types_figure(coarse, cascade, data, n=n_examples, shots=shots), "prompt_types", run=run)

# %% [markdown]
# ## Coarse vs fine on held-out synthetic images
# The fine map for pixel metrics is the mean of H' and SAM's mask probability; mask IoU compares the binary
# masks with the ground truth on defective images. The values behind the means (pixel AUROC per category and seed,
# IoU per image) go to `segmentation_coarse_vs_fine_runs`, for the paired intervals of `results/CLAIMS.md`.

# %%
values = RunLog()
table = segmentation_table(coarse, [c for c, _ in trained.values()], data, shots=shots, seeds=seeds, runs=values,
                           train_seeds=list(trained))
results.write_table(values.frame(), "segmentation_coarse_vs_fine_runs", run=run,
                    dataset="synthetic (train seed 1, eval seed 0)",
                    note="the values segmentation_coarse_vs_fine pools: percent; unit = category, or category/image index")
results.write_table(table, "segmentation_coarse_vs_fine", run=run, dataset="synthetic (train seed 1, eval seed 0)",
                    note=f"SAM side trained {len(losses)} steps at lr {lr or P.train.sam_warmup_lr}; K={shots}; "
                         f"support seeds {seeds}; {training_seeds_note(train_seeds)} (the coarse row does not train: std 0)")
table

# %% [markdown]
# ## What this says about the paper's claim (its rows of `results/CLAIMS.md`)
# Sec. 3.2: SAM, prompted by the coarse mask, gives a finer mask than the coarse one. Each row: the difference over
# pairs of the same image (or category and support seed) and training seed, with a 95 % paired bootstrap interval.

# %%
claims_frame(notebook="03")
