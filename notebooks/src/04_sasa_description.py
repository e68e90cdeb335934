# %% [markdown]
# # 04 · SASA and the describer: LLaVA with LoRA
#
# *SAM-LLaVA*, Sec. 3.3-3.4, Eq. 7-8. SASA masks the SAM features with M_fine, projects them and the CLIP
# text embeddings into d_a, runs two layers of bidirectional cross-attention (vision→text, then text→vision on
# the updated V') and hands [V'; T'] to LLaVA beside LLaVA's own image tokens and the question. LoRA
# (r = 16, α = 32) sits on q, v, gate, up and down projections of the language model only.
#
# **Offline profile:** the language model is the real SmolLM2-135M-Instruct; CLIP is tiny and random; SAM's image
# encoder and LLaVA's vision tower are stand-ins built on the frozen ImageNet EfficientNet-Lite0 of the few-shot
# memory. This notebook shows the *untrained* model; notebook 05 trains it.

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
shots = 1
max_new_tokens = 64
count_profiles = ["tiny", "offline"]

# %%
from samllava.core import results
from samllava.core.config import load_profile
from samllava.describe.template import build_prompt
from samllava.model.sam_llava import build_model
from samllava.data import sample_support
from samllava.data.instructions import QUESTION
from samllava.notebook.tables import parameter_table, sasa_attention_figure, synthetic
from samllava.core.provenance import provenance

P = load_profile(profile)
model = build_model(P, device=device).eval()
data = synthetic(P, "eval")
run = provenance(profile=P, data={"synthetic eval": data}, seeds=[0])

# %% [markdown]
# ## The conversation template (placeholders shortened)

# %%
print(build_prompt(QUESTION.format(category="fabric"), 3, 4, system=model.describer.system))

# %% [markdown]
# ## SASA attention: which visual positions each state word attends to (last layer, Eq. 8)

# %%
fig, out = sasa_attention_figure(model, data, shots=shots)
results.save_figure(fig, "sasa_attention", run=run, note="untrained model")
print("X_llava tokens:", tuple(out.tokens.shape), "(B, g*g + N_t, llm_dim)")

# %% [markdown]
# ## Parameter counts: total, trainable, LoRA (millions)
# The paper reports 31.59M LoRA parameters for Vicuna-7B (Sec. 5.3.5); the paper row is counted from the
# configuration on the meta device.

# %%
counts = parameter_table(count_profiles)
results.write_table(counts, "parameter_counts", run=provenance(profile=count_profiles, data="none"), float_format="{:.3f}",
                    note="paper row: the paper profile's LLaVA part counted from its configuration on the meta device (no weights loaded)")
counts

# %% [markdown]
# ## The untrained model on one defective and one normal image

# %%
name, cat = next(iter(data.items()))
pick = [next(s for s in cat.test if s.label == 1), next(s for s in cat.test if s.label == 0)]
support = cat.load_images(sample_support(cat, shots, 0), P.data.image_size)
for s, d in zip(pick, model.diagnose(cat.load_images(pick, P.data.image_size), name, support, max_new_tokens=max_new_tokens)):
    print(f"{s.image_path.name} (label {s.label}): answer={d.answer!r}\n  {d.description}\n")
