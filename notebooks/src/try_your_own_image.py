# %% [markdown]
# # Try your own image
#
# Upload an image below (and, if you have them, a few images of the same object *without* defects) and see what
# SAM-LLaVA makes of it: the coarse heatmap on your image, the coarse and fine masks, the score, the verdict and the
# model's description. The panel runs what `samllava diagnose IMAGE --support DIR --out OUT` runs (the same
# model, support fit and outputs); with `out_dir` set it also writes the same mask.png, overlay.png and report.json.
#
# **Which model:** without `checkpoint`, the profile's trained default model, the one `samllava diagnose` uses
# (trained once on first use, a few minutes on a CPU, or beforehand with `samllava train --profile offline`).
# **Normal images** calibrate the verdict (its thresholds come from them alone) and switch the coarse stage to its
# few-shot path (Eq. 2). Without them only the zero-shot CLIP term can judge, and the tiny and offline profiles'
# CLIP has random weights: the panel then says so instead of answering at random.

# %% tags=["parameters"]
profile = "offline"
checkpoint = None  # a trained SamLlava checkpoint; None: the profile's default trained model
image_path = None  # an image file to diagnose at once; None: upload one in the panel
support_dir = None  # a folder of normal images of the same object; None: upload some in the panel
category = None  # e.g. "bottle"; None: a generic object
out_dir = None  # a folder: mask.png, overlay.png and report.json are written there, as `samllava diagnose --out` does
device = None  # cpu, cuda, cuda:N; None: cuda when available, else cpu (samllava.core.device)

# %%
from IPython.display import display

from samllava.notebook.try_image import try_your_own_image

panel = try_your_own_image(profile, checkpoint, device=device, image_path=image_path, support_dir=support_dir,
                           category=category, out_dir=out_dir)
display(panel.widget)

# %% [markdown]
# The report of the last diagnosis (what report.json holds); None until there is an image.

# %%
panel.report
