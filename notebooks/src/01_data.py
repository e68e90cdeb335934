# %% [markdown]
# # 01 · Data: real layouts, your own folder, synthetic defects
#
# *SAM-LLaVA* (An, Wang, Dong), Sec. 4.2. The paper evaluates on MVTec-AD, VisA and TADD. None of them can be
# downloaded here, so this notebook shows the loaders on **miniatures written in the exact released layouts**,
# and the **synthetic defect data** that is the default data of the offline profile and the labelled stand-in
# for the TADD subsets. Point `data_roots` at real copies (`{"mvtec": "/data/mvtec", "visa": "/data/VisA"}`)
# to summarise those instead.

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
device = None  # cpu, cuda, cuda:N; None: cuda when available, else cpu (samllava.core.device); no model runs here
n_show = 6

# %%
from samllava.core import results
from samllava.report import figures as viz
from samllava.core.config import load_profile
from samllava.data import generate_mvtec_miniature, generate_visa_miniature, load_dataset, load_mvtec, load_visa
from samllava.core.paths import data_dir
from samllava.notebook.tables import dataset_summary, synthetic, synthetic_gallery
from samllava.core.provenance import provenance

P = load_profile(profile)

# %% [markdown]
# ## Real layouts
# MVTec-AD: `<cat>/train/good/000.png`, `<cat>/test/<defect>/000.png`, `<cat>/ground_truth/<defect>/000_mask.png`.
# VisA: `split_csv/1cls.csv` with `object,split,label,image,mask`, multi-id masks binarised.

# %%
mvtec_root = data_roots.get("mvtec") or generate_mvtec_miniature(data_dir() / "miniatures" / "mvtec")
visa_root = data_roots.get("visa") or generate_visa_miniature(data_dir() / "miniatures" / "visa")
sets = {
    ("MVTec-AD" if "mvtec" in data_roots else "MVTec-AD miniature (generated)"): load_mvtec(mvtec_root),
    ("VisA" if "visa" in data_roots else "VisA miniature (generated)"): load_visa(visa_root),
    "synthetic (eval, seed 0)": synthetic(P, "eval"),
}
if "own" in data_roots:
    sets["own data"] = load_dataset(data_roots["own"])
summary = dataset_summary(sets)
run = provenance(profile=P, data=sets)  # commit, date, data digests, seeds, device, versions: in every artefact
results.write_table(summary, "data_summary", run=run, dataset=", ".join(sets),
                    note="counts of the loaded data sets; miniatures are generated in the real layouts", float_format="{:.0f}")
summary

# %% [markdown]
# ## Synthetic defects with masks and descriptions
# Textures and objects; cracks, holes, stains, scratches (down to a few pixels wide) and contamination.

# %%
fig, captions = synthetic_gallery(synthetic(P, "eval"), n_show)
results.save_figure(fig, "fig0_synthetic_samples", run=run)
for c in captions:
    print(c)
