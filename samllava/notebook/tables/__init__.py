"""What the notebooks call: data sets of a profile, the trained model, shared benchmarks.

Notebooks stay thin (a parameters cell, a few calls, a saved table or figure); everything they
compute lives here or in the stage modules, so it is tested like the rest of the library.
Costly results shared by several notebooks (the SAM side, the trained model) are cached under
:func:`samllava.core.paths.checkpoint_dir`, keyed by what they depend on, and rebuilt when missing.

One module per part of the paper, as the notebooks use them:

* :mod:`.data` - the profile's synthetic splits, the TADD stand-in, the packaged textiles;
* :mod:`.trained` - the SAM side and the end-to-end model, trained once and cached;
* :mod:`.training_seeds` - the training runs behind every training-dependent table, pooled (mean, std);
* :mod:`.detection` - segmentation and few-shot tables (Tables 1-4, Figs. 2, 5);
* :mod:`.description` - Tables 5-6, Figs. 3-4, the training before/after tables (answers and their
  scores come from :mod:`samllava.evaluate.answers`);
* :mod:`.verdict` - the verdict calibrated on normal images, beside the best threshold on the labels;
* :mod:`.ablations` - Tables 7-10;
* :mod:`.complexity` - Table 11 and the parameter table.

Builders that pool take a :class:`samllava.report.runs.RunLog` (``runs=``) and append the values they pool,
which the notebooks write as ``<table>_runs.csv`` for the paired intervals of ``results/CLAIMS.md``.
"""
from samllava.evaluate.answers import description_eval, log_odds_eval, position_baselines
from samllava.data import balanced_subset
from samllava.notebook.tables.ablations import (
    ABLATIONS, DEFINITIONS, ablation_note, ablation_table, accuracy_variants_for,
)
from samllava.notebook.tables.complexity import complexity_table, gpu_rows, parameter_table
from samllava.notebook.tables.data import (
    EVAL_SEED, STANDIN_DOMAINS, TADD_SEED, TRAIN_SEED, cross_domain_sets, dataset_summary, realtex, synthetic,
    synthetic_gallery, tadd_standin, textiles,
)
from samllava.notebook.tables.description import (
    accuracy_note, accuracy_table, answer_runs, answers_table, before_after_runs, judge_caption, judge_table,
    log_odds_table,
    qualitative_figure, sasa_attention_figure, whose_yes_no, words_table, trained_runs,
)
from samllava.notebook.tables.detection import (
    cascade_figure, coarse_figure, fewshot_benchmark, fewshot_pixel_tables, figure2, mask_iou, prompt_types_figure,
    seed_stats, segmentation_comparison_figure, segmentation_table, table1_note, zero_shot_table,
)
from samllava.notebook.tables.training_seeds import (
    TRAINING_SEEDS, answer_training_seeds, pool_training_seeds, training_seeds_note, with_training_seed,
)
from samllava.notebook.tables.calibration import verdict_table
from samllava.notebook.tables.trained import (
    SAM_SIDE_SECTIONS, SAM_SIDE_STEPS, cache_key, cascade_inputs, model_dir, sam_side_state, train_cascade,
    trained_model,
)

__all__ = [
    "ABLATIONS",
    "DEFINITIONS",
    "ablation_note",
    "ablation_table",
    "accuracy_variants_for",
    "complexity_table",
    "gpu_rows",
    "parameter_table",
    "EVAL_SEED",
    "STANDIN_DOMAINS",
    "TADD_SEED",
    "TRAIN_SEED",
    "balanced_subset",
    "cross_domain_sets",
    "dataset_summary",
    "realtex",
    "synthetic",
    "synthetic_gallery",
    "tadd_standin",
    "textiles",
    "accuracy_note",
    "accuracy_table",
    "answer_runs",
    "answers_table",
    "before_after_runs",
    "description_eval",
    "judge_caption",
    "judge_table",
    "whose_yes_no",
    "words_table",
    "log_odds_eval",
    "log_odds_table",
    "position_baselines",
    "qualitative_figure",
    "sasa_attention_figure",
    "trained_runs",
    "TRAINING_SEEDS",
    "answer_training_seeds",
    "pool_training_seeds",
    "training_seeds_note",
    "with_training_seed",
    "cascade_figure",
    "coarse_figure",
    "fewshot_benchmark",
    "fewshot_pixel_tables",
    "figure2",
    "mask_iou",
    "prompt_types_figure",
    "seed_stats",
    "segmentation_comparison_figure",
    "segmentation_table",
    "table1_note",
    "zero_shot_table",
    "SAM_SIDE_SECTIONS",
    "SAM_SIDE_STEPS",
    "cache_key",
    "cascade_inputs",
    "model_dir",
    "sam_side_state",
    "train_cascade",
    "trained_model",
    "verdict_table",
]
