# %% [markdown]
# # 08 · Table 5 (description accuracy), Table 6 (judged quality), Figures 3-4 (qualitative)
#
# *SAM-LLaVA*, Sec. 5.1.2 and 5.2. Accuracy follows the paper's rule: an anomalous image is right when the
# answer says yes, a normal one when it says no; mean and std over the runs (trained models x support seeds) for
# each K. Table 6 uses a pluggable judge: an OpenAI-compatible endpoint when `judge` is configured
# (`{"base_url": ..., "model": ...}`; the paper used GPT-4V), else the offline mask- and annotation-grounded
# consistency score. The table and the figure name the judge: the offline score is not GPT-4V's, so its numbers do
# not compare with the paper's. The models are the ones trained in notebook 05, one per training seed (trained here
# if missing).

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
shots = [1, 2, 4]
seeds = [0, 1]  # support seeds
train_seeds = [0, 1, 2]  # Table 6: one model per training seed, mean and std; Table 5: see answer_training_seeds
per_label = 6  # Table 5 on 6 normal + 6 anomalous held-out images per category (None: all)
judge_per_label = 4  # Table 6 on 4 + 4 per category
max_new_tokens = 64  # a whole answer and description (the answers of Table 5 need a few tokens only)
words_shots = 4  # the words' table: K normal images
judge = {}

# %%
from samllava.core import results
from samllava.core.config import load_profile
from samllava.evaluate.judge import make_judge
from samllava.notebook.tables import (
    accuracy_note, accuracy_table, answer_training_seeds, judge_caption, judge_table, pool_training_seeds,
    qualitative_figure, realtex, synthetic, textiles, trained_model, training_seeds_note, verdict_table,
    with_training_seed, words_table,
)
from samllava.core.provenance import provenance
from samllava.report.claims import claims_frame
from samllava.report.runs import RunLog

P = load_profile(profile)
data = synthetic(P, "eval")
run = provenance(profile=P, data={"synthetic train": synthetic(P, "train"), "synthetic eval": data},
                 seeds={"support": seeds, "training": train_seeds})

# %% [markdown]
# Table 5 is measured over `answer_training_seeds`: every training seed where the language model answers by itself;
# the first alone where the answer's yes/no is the calibrated verdict's (the offline profile), which no training
# touches. There the accuracy below is the verdict's, not the language model's (the table's note says which).

# %%
answer_seeds = answer_training_seeds(P, train_seeds)
models = (trained_model(with_training_seed(P, s), progress=False, device=device)[0] for s in answer_seeds)
answer_values = RunLog()
acc = accuracy_table(models, data, shots=shots, seeds=seeds, per_label=per_label, runs=answer_values,
                     training_seeds=answer_seeds)
results.write_table(answer_values.frame(), "table5_description_accuracy_runs", run=run,
                    dataset="synthetic (held-out), stand-in for MVTec-AD/VisA",
                    note="per image, K, support and training seed: correct = 100 when the yes/no matches the label")
results.write_table(acc, "table5_description_accuracy", run=run, dataset="synthetic (held-out), stand-in for MVTec-AD/VisA",
                    note=accuracy_note(P, answer_seeds, seeds, per_label))
acc

# %% [markdown]
# ## The verdict behind the answers, calibrated on the K normal images alone
# Per data set and K: the coarse score's image AUROC, the calibrated verdict's accuracy, the oracle (the best
# threshold chosen on these very labels), the false-positive rate achieved beside the target and the
# true-positive rate. Mean over categories, ± std over support seeds. The real-texture set is the held-out split.

# %%
sets = {"synthetic (held-out)": data, "textiles (packaged photographs)": textiles(),
        "real textures (held-out)": realtex(P, "heldout")}
verdicts, _ = verdict_table(P, sets, shots=shots, seeds=seeds, device=device)
results.write_table(verdicts, "verdict_calibration", run=run, data=sets,
                    dataset="synthetic (held-out); conformal-clip-data textiles; real textures (scikit-image, held-out seed 200)",
                    note=f"support seeds {seeds}; thresholds from the support's normal images only (docs/verdict.md); percent")
verdicts

# %% [markdown]
# ## How true the words are
# Every description on the three labelled sets (K = `words_shots`, the first training seed's model): the share that claims
# an object other than the category, a colour the pixels do not show, or a defect type or position its mask does
# not support (*hallucinated*), the same for the language model's own text before the check, and, on the
# defective images judged defective, the named position and type against the labels (`samllava.evaluate.words`).

# %%
first_model = trained_model(with_training_seed(P, train_seeds[0]), progress=False, device=device)[0]
words = words_table([first_model], sets, shots=words_shots, seeds=seeds[:1], max_new_tokens=max_new_tokens)
results.write_table(words, "description_words", run=run, data=sets, seeds={"support": seeds[:1], "training": train_seeds[:1]},
                    note="percent; hallucinated: the reported words contradict the category or the measurements "
                         "(pixels, M_fine); position and type: on defective images judged defective, against the labels")
words

# %%
J = make_judge(judge)
judge_values = RunLog()
judged = [judge_table(trained_model(with_training_seed(P, s), progress=False, device=device)[0], data, J, shots=shots[0],
                      max_new_tokens=max_new_tokens, per_label=judge_per_label, runs=judge_values, training_seed=s)
          for s in train_seeds]
results.write_table(judge_values.frame(), "table6_judge_runs", run=run, seeds={"support": [0], "training": train_seeds},
                    dataset="synthetic (held-out)", note=f"judge: {J.name}; the score of every image and training seed")
scores, examples = pool_training_seeds([t for t, _ in judged]), judged[0][1]  # the figures: the first training seed's
results.write_table(scores, "table6_judge", run=run, seeds={"support": [0], "training": train_seeds}, dataset="synthetic (held-out)",
                    note=f"judge: {J.name}; {judge_per_label} normal + {judge_per_label} anomalous images per category; "
                         f"{training_seeds_note(train_seeds)}")
scores

# %%
fig = qualitative_figure(examples, judge_name=J.name)
results.save_figure(fig, "fig3_4_qualitative", run=run, note=judge_caption(J.name))
for e in examples:
    print(f"[{e['kind']}] score {e['score']:.0f}: {e['description']}")

# %% [markdown]
# ## What this says about the paper's claims (their rows of `results/CLAIMS.md`)
# Each difference is paired over images, support and training seeds, with a 95 % bootstrap interval; a row this
# profile cannot test says why.

# %%
claims_frame(notebook="08")
