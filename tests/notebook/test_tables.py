"""Notebook glue that caches costly results: the trained SAM side and the end-to-end model."""
import numpy as np
import pytest
import torch

from samllava.notebook import tables as pipeline
from samllava.core.config import load_profile
from samllava.train.default_model import DEFAULT_SHOTS
from samllava.evaluate.harness import CoarseMethod


@pytest.fixture()
def dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMLLAVA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SAMLLAVA_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    return tmp_path


def _profile(**changes):
    return load_profile("tiny").replace(**{"data.synthetic_images": 4, "data.synthetic_train": 2, **changes})


def test_train_cascade_is_cached_by_budget(dirs, monkeypatch):
    p = _profile()
    _, first, losses = pipeline.train_cascade(p, steps=3, progress=False)
    files = list((dirs / "ckpt").glob("tiny-cascade-*.pt"))
    assert len(files) == 1 and len(losses) == 3
    # the cached file holds the SAM side only, not the frozen image encoder
    assert not any("image_encoder" in k for k in torch.load(files[0], weights_only=True)["sam_side"])

    def fail(*a, **k):
        raise AssertionError("trained again although cached")

    monkeypatch.setattr("samllava.train.fine_stage.train_segmentation", fail)
    _, again, losses2 = pipeline.train_cascade(p, steps=3, progress=False)
    assert losses2 == losses
    sa, sb = first.state_dict(), again.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # settings the SAM side does not depend on share the entry (w/o SASA reuses the main SAM warm-up)
    pipeline.train_cascade(p.replace(**{"sasa.enabled": False, "lora.r": 4, "train.epochs": 7, "train.sasa_lr": 1e-3}),
                           steps=3, progress=False)
    with pytest.raises(AssertionError, match="trained again"):  # another budget is another cache entry
        pipeline.train_cascade(p, steps=4, progress=False)
    with pytest.raises(AssertionError, match="trained again"):  # and another batch size
        pipeline.train_cascade(p.replace(**{"train.batch_size": 3}), steps=3, progress=False)
    with pytest.raises(AssertionError, match="trained again"):  # so is another SAM configuration
        pipeline.train_cascade(p.replace(**{"sam.prompt": "box"}), steps=3, progress=False)


def test_trained_model_starts_from_the_shared_sam_warm_up(dirs):
    p = _profile(**{"train.sam_warmup_steps": 3, "train.epochs": 1})
    _, warm, _ = pipeline.train_cascade(p, shots=1, progress=False)
    model, history = pipeline.trained_model(p, shots=1, progress=False)
    assert len(history) > 0
    model2, history2 = pipeline.trained_model(p, shots=1, progress=False)  # reused, not retrained
    assert history2 == history
    # a changed profile trains a new model in its own folder
    assert pipeline.model_dir(p, "main", epochs=1, shots=1) != pipeline.model_dir(
        p.replace(**{"train.lr": 1e-3}), "main", epochs=1, shots=1
    )


def test_gpu_rows_name_the_card_batch_1_and_the_best_batch_apart(tmp_path):
    import json

    g = {
        "gpu": {
            "device": "NVIDIA H200",
            "dtype": "bfloat16",
            "new_tokens": 128,
            "params": {"total_M": 1.0, "trainable_M": 0.5, "lora_M": 0.25},
            "end_to_end_fast": {
                "batch_1": {"mean_ms": 800.0, "images_per_s": 1.25, "peak_memory_GB": 17.5, "runs": 3, "warmup": 1},
                "batch_8": {"error": "OOM"},
                "batch_32": {"mean_ms": 3000.0, "images_per_s": 10.5, "peak_memory_GB": 40.0, "runs": 3, "warmup": 1},
            },
        }
    }
    path = tmp_path / "gpu_bench.json"
    path.write_text(json.dumps(g))
    one, best = pipeline.gpu_rows(path)
    assert "NVIDIA H200" in one["model"] and "3 runs after 1" in one["model"]
    # batch 1 beside the paper's batch-1 figure; the batched throughput on its own row
    assert (one["batch"], one["latency_ms"], one["throughput_img_s"], one["peak_memory_GB"]) == (1, 800.0, 1.25, 17.5)
    assert (best["batch"], best["latency_ms"], best["throughput_img_s"]) == (32, 3000.0, 10.5)
    assert best["peak_memory_GB"] == 40.0
    assert pipeline.gpu_rows(tmp_path / "missing.json") == [] and pipeline.gpu_rows(None) == []


def test_model_dir_defaults_to_the_profiles_budget():
    p = _profile()
    assert pipeline.model_dir(p) == pipeline.model_dir(p, "main", epochs=p.train.epochs, shots=DEFAULT_SHOTS)


def test_ablation_variants_share_one_frozen_sam_encoder():
    """ablation_table shares SAM's image encoder and its embeddings across variants: they must be identical."""
    from samllava.sam import build_cascade

    p = load_profile("tiny")
    ref = build_cascade(p).sam.image_encoder.state_dict()
    for name, changes in pipeline.ABLATIONS.items():
        enc = build_cascade(p.replace(**changes) if changes else p).sam.image_encoder.state_dict()
        assert ref.keys() == enc.keys() and all(torch.equal(ref[k], enc[k]) for k in ref), name


def test_train_cascade_takes_precomputed_inputs(dirs):
    from samllava.sam import build_cascade

    p = _profile()
    calls = []

    def inputs():
        calls.append(1)
        coarse = CoarseMethod(p)
        return pipeline.cascade_inputs(coarse, build_cascade(p), pipeline.synthetic(p, "train"), shots=1)

    _, a, la = pipeline.train_cascade(p, steps=2, progress=False, inputs=inputs, cache=False)
    _, b, lb = pipeline.train_cascade(p, steps=2, progress=False, cache=False)
    assert calls == [1] and la == lb  # the same inputs give the same training


def test_position_baselines_count_defective_images_with_a_position():
    from samllava.notebook.tables import position_baselines
    from samllava.model.encoded_data import Examples

    def ex(labels, positions):
        return Examples("c", None, None, [""] * len(labels), [""] * len(labels), np.array(labels), positions)

    b = position_baselines([ex([0, 1, 1], ["none", "top", "center"]), ex([1, 1, 1], ["top", "none", "left"])])
    assert b["n_defective"] == 4 and b["most_frequent_position"] == "top"
    assert b["most_frequent"] == pytest.approx(50.0) and b["uniform"] == pytest.approx(100 / 9)
    with pytest.raises(ValueError, match="no defective"):
        position_baselines([ex([0, 0], ["none", "none"])])


def test_position_baseline_from_the_predicted_mask():
    from types import SimpleNamespace

    from samllava.notebook.tables import position_baselines
    from samllava.model.encoded_data import Examples

    masks = torch.zeros(3, 9, 9, dtype=torch.bool)
    masks[0, :3, :3] = True  # top left: right
    masks[1, 6:, 6:] = True  # bottom right, but the truth is "top": wrong
    # enc: the example's indices
    model = SimpleNamespace(fine=lambda enc: SimpleNamespace(mask=masks[enc]), device=torch.device("cpu"))
    ex = Examples("c", torch.arange(3), None, [""] * 3, [""] * 3, np.array([1, 1, 0]), ["top left", "top", "none"])
    b = position_baselines([ex], model)
    assert b["from_m_fine"] == pytest.approx(50.0) and b["n_defective"] == 2
    ex.gt = masks.float()  # the same masks as ground truth: the oracle reading gives the same score
    assert position_baselines([ex], oracle_masks=True)["from_m_fine"] == pytest.approx(50.0)


def test_table11_names_the_machine_in_a_column_not_in_the_row_label():
    from samllava.evaluate.bench import _device_name
    from samllava.core.provenance import cpu_model

    assert _device_name(torch.device("cpu")) == f"CPU ({cpu_model()}, {torch.get_num_threads()} threads)"


def test_pool_training_seeds_by_hand():
    """Mean and sample std per cell over the runs; labels, paper columns and counts kept; paper rows no std."""
    import pandas as pd

    def run(a, b):
        return pd.DataFrame({"method": ["ours", "X (paper)"], "auroc": [a, np.nan], "n": [12, 12],
                             "paper auroc": [np.nan, 90.0]})

    t = pipeline.pool_training_seeds([run(80.0, 0), run(84.0, 0), run(86.0, 0)])
    assert list(t.columns) == ["method", "auroc", "auroc_std", "n", "paper auroc"]
    assert t.loc[0, "auroc"] == pytest.approx(250 / 3)
    assert t.loc[0, "auroc_std"] == pytest.approx(np.std([80, 84, 86], ddof=1))
    assert np.isnan(t.loc[1, "auroc"]) and np.isnan(t.loc[1, "auroc_std"])
    assert t["n"].tolist() == [12, 12] and t.loc[1, "paper auroc"] == 90.0
    same = pipeline.pool_training_seeds([run(93.6, 0)] * 3)  # equal in every run: kept exactly, std 0
    assert same.loc[0, "auroc"] == 93.6 and same.loc[0, "auroc_std"] == 0.0
    one = pipeline.pool_training_seeds([run(80.0, 0)])
    assert one.loc[0, "auroc"] == 80.0 and np.isnan(one.loc[0, "auroc_std"])  # one run: no spread to state
    with pytest.raises(ValueError, match="run 1"):
        pipeline.pool_training_seeds([run(80.0, 0), run(80.0, 0).iloc[:1]])
    other = run(80.0, 0)
    other.loc[1, "paper auroc"] = 91.0
    with pytest.raises(ValueError, match="paper auroc"):
        pipeline.pool_training_seeds([run(80.0, 0), other])
    half = run(80.0, 0)
    half.loc[1, "auroc"] = 3.0  # measured in one run only: a failed run must not shrink the mean
    with pytest.raises(ValueError, match="NaN"):
        pipeline.pool_training_seeds([run(80.0, 0), half])


def test_training_seed_rules():
    p = _profile()
    assert pipeline.with_training_seed(p, 2).train.seed == 2 and p.train.seed == 0
    verdict = p.replace(**{"llm.answer_from_verdict": True})
    own = p.replace(**{"llm.answer_from_verdict": False})
    assert pipeline.answer_training_seeds(verdict, [3, 4, 5]) == (3,)
    assert pipeline.answer_training_seeds(own, [3, 4, 5]) == (3, 4, 5)
    variants = ["SAM-LLaVA (full)", "w/o SASA"]
    assert pipeline.accuracy_variants_for(verdict, variants) == ["SAM-LLaVA (full)"]
    assert pipeline.accuracy_variants_for(own, variants) == variants


def test_training_seeds_give_their_own_cached_sam_sides(dirs):
    """Each training seed trains (and caches) its own SAM side; segmentation_table pools them."""
    p = _profile()
    sides = [pipeline.train_cascade(pipeline.with_training_seed(p, s), steps=2, progress=False) for s in (0, 1)]
    a, b = (pipeline.sam_side_state(c) for _, c, _ in sides)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    coarse = sides[0][0]
    data = pipeline.synthetic(p, "eval")
    table = pipeline.segmentation_table(coarse, [c for _, c, _ in sides], data, shots=1)
    assert table["method"].tolist() == ["coarse only (Eq. 1-2)", "coarse + SAM cascade (Eq. 3-4)"]
    assert table.loc[0, "pixel_auroc_std"] == 0.0  # the coarse stage does not train
    assert "mask_iou_std" in table.columns and np.isfinite(table.loc[1, "mask_iou_std"])
