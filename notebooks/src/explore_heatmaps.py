# %% [markdown]
# # Explore the coarse heatmaps: your own folder, or the synthetic set
#
# *SAM-LLaVA*, Sec. 3.1, Eq. 1-2 (the figures and the benchmark are in notebook 02). Point `data_roots` at your
# own folder in the MVTec layout, `{"own": "/path/to/folder"}`, with `<category>/train/good/*.png` (normal
# images: the K shots) and `<category>/test/<good|defect name>/*.png` (the images explored; masks in
# `<category>/ground_truth/<defect>/<stem>_mask.png` are optional). Without `data_roots` the profile's synthetic
# evaluation set is explored.
#
# The panel draws its first view itself; every control redraws it with the same code. From left to right: the
# image (with the heatmap on top, "heatmap on image"), the map with a colour bar in its own units, the mask and the
# ground truth. The threshold slider spans the shown map's values; its value is the cyan mark on the colour bar and
# the mask's outline on the map. Moving it switches from Otsu to that manual threshold. The status line names the
# image's label, the score, the verdict (n/a until a calibrated score threshold exists) and the active terms.
#
# **Offline profile:** its CLIP is random, so K = 0 (zero-shot) shows maps without information; K >= 1 uses the
# real ImageNet EfficientNet-Lite0 memory.

# %% tags=["parameters"]
profile = "offline"
data_roots = {}  # e.g. {"own": "/path/to/folder"}; empty: the profile's synthetic evaluation set
device = None  # cpu, cuda, cuda:N; None: cuda when available, else cpu (samllava.core.device)

# %%
from IPython.display import display

from samllava.core.config import load_profile
from samllava.evaluate.harness import CoarseMethod
from samllava.notebook.explorer import explorer_data
from samllava.notebook.widgets import heatmap_explorer

P = load_profile(profile)
data = explorer_data(P, data_roots)
method = CoarseMethod(P, device=device)
explorer = heatmap_explorer(method.coarse, data, n_levels=len(P.fewshot.layers), size=P.data.image_size)
display(explorer.widget)
