# %% [markdown]
# # Try your own image
#
# Upload an image below (and, if you have them, a few images of the same object *without* defects) and see what
# SAM-LLaVA makes of it: the coarse heatmap on your image, the coarse and fine masks, the score, the verdict and the
# model's description. The panel runs exactly what `samllava diagnose IMAGE --support DIR --out OUT` runs
# (`samllava.diagnose.diagnose_images`); with `out_dir` set it also writes the same mask.png, overlay.png and
# report.json.
#
# **Which model:** without `checkpoint` the model is **untrained** (the panel says so): its answer and description
# mean nothing yet. Train one (`samllava.train`; notebook 05 leaves its model in `build/checkpoints/<run>/last.pt`),
# then pass that file as `checkpoint`. Normal images switch the coarse stage to its few-shot path (Eq. 2); without
# them it runs zero-shot.

# %% tags=["parameters"]
profile = "offline"
checkpoint = None  # a trained SamLlava checkpoint; None: the untrained model
image_path = None  # an image file to diagnose at once; None: upload one in the panel
support_dir = None  # a folder of normal images (few-shot path); None: upload some in the panel, or none (zero-shot)
category = None  # e.g. "bottle"; None: a generic object
out_dir = None  # a folder: mask.png, overlay.png and report.json are written there, as `samllava diagnose --out` does

# %%
from IPython.display import display

from samllava.try_image import try_your_own_image

panel = try_your_own_image(profile, checkpoint, image_path=image_path, support_dir=support_dir, category=category,
                           out_dir=out_dir)
display(panel.widget)

# %% [markdown]
# The report of the last diagnosis (what report.json holds); None until there is an image.

# %%
panel.report
