"""One device setting, honoured everywhere (samllava.core.device), tested without a GPU.

The wrong-device test: the tiny pipeline (build, SAM warm-up and one training step, evaluation, answers,
diagnosis, checkpoint) runs with the CPU requested while PyTorch's default device is ``meta``. Any tensor
the package creates without an explicit device (or derived from one) then lands on ``meta`` and the
first operation mixing it with real tensors fails, as a tensor left on the CPU fails on a GPU run.
"""
import os

import pytest
import torch

from samllava.evaluate.answers import answer, answer_log_odds
from samllava.model.checkpoint import DESCRIBER, WRAPPED, load_checkpoint, load_model
from samllava.core.config import load_profile
from samllava.data import generate_synthetic, load_dataset
from samllava.core.device import DEVICE_ENV, parse_dtype, resolve_device, to_device, tower_dtype
from samllava.evaluate.harness import CascadeMethod, CoarseMethod, FullMethod, KnnMethod, evaluate
from samllava.model.encoded_data import prepare
from samllava.model.sam_llava import build_model
from samllava.train.end_to_end import train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = generate_synthetic(tmp_path_factory.mktemp("syn"), categories=["fabric"], n_train=2, n_test=6, size=64,
                              seed=1)
    return load_dataset(root)


def _pipeline(profile, data, out) -> dict:
    """The tiny pipeline with the CPU requested: build, SAM warm-up and one epoch (2 steps), answers,
    log-odds, three evaluation methods, a diagnosis, the checkpoint read back; what each produced."""
    cat = data["fabric"]
    model = build_model(profile, device="cpu")
    assert model.device == torch.device("cpu")
    examples = prepare(model, data, 64, shots=1, progress=False)
    history = train(model, examples, epochs=1, out_dir=out, progress=False)
    coarse = CoarseMethod(profile, device="cpu")
    metrics = {name: evaluate(method, data, shots=1, image_size=64, progress=False)["fabric"].per_seed
               for name, method in (("full", FullMethod(profile, model=model)),
                                    ("cascade", CascadeMethod(coarse, model.cascade)),
                                    ("knn", KnnMethod(profile, device="cpu")))}
    diagnoses = model.diagnose(cat.load_images(cat.test[:2], 64), "fabric", cat.load_images(cat.train[:1], 64),
                               max_new_tokens=2)
    reloaded = load_model(profile, out, device="cpu").trainable_state()
    return {"history": history, "texts": answer(model, examples, max_new_tokens=2, progress=False),
            "odds": answer_log_odds(model, examples).tolist(), "metrics": metrics,
            "diagnoses": [(d.answer, d.description, d.score, d.fine_mask.tolist()) for d in diagnoses],
            "state": model.trainable_state(), "reloaded": reloaded}


def test_tiny_pipeline_creates_every_tensor_on_the_requested_device(data, tmp_path):
    """Under the ``meta`` default device the pipeline must give exactly what it gives under the CPU
    default: an error would say a tensor was made on the default device, a difference that one was read
    from the wrong device (PyTorch indexes a CPU tensor with a meta index silently, returning garbage)."""
    profile = load_profile("tiny").replace(**{"train.sam_warmup_steps": 2})
    with torch.device("cpu"):
        want = _pipeline(profile, data, tmp_path / "cpu")
    with torch.device("meta"):  # the default device is NOT the requested one
        got = _pipeline(profile, data, tmp_path / "meta")
    assert len(got["history"]) == 2 and len(got["texts"][0]) == len(data["fabric"].test)
    for key in ("history", "texts", "odds", "metrics", "diagnoses"):
        assert got[key] == want[key], key
    for key in ("state", "reloaded"):
        for name, value in want[key].items():
            torch.testing.assert_close(got[key][name], value, rtol=0, atol=0, msg=name)
    for name, value in got["state"].items():
        if ".lora_" not in name:  # load_model folds LoRA into the weights (tests/model/test_checkpoint.py)
            torch.testing.assert_close(got["reloaded"][name.replace(WRAPPED, DESCRIBER, 1)], value, rtol=0, atol=0,
                                       msg=name)


def _helpers(profile, data) -> dict:
    """The notebooks' helpers with the CPU requested: the SAM side trained, the segmentation table, the
    coarse explorer's view, SASA's attention figure (their numbers)."""
    import matplotlib.pyplot as plt

    from samllava.notebook.tables import sasa_attention_figure, segmentation_table, train_cascade
    from samllava.notebook.explorer import CoarseCache, coarse_view

    coarse, cascade, losses = train_cascade(profile, steps=2, data=data, cache=False, progress=False, device="cpu")
    table = segmentation_table(coarse, [cascade], data, shots=1)
    view = coarse_view(CoarseCache(coarse.coarse, data, size=64).maps("fabric", len(data["fabric"].test) - 1, 1))
    fig, out = sasa_attention_figure(build_model(profile, device="cpu"), data)
    plt.close(fig)
    return {"losses": losses, "table": table.to_json(),  # JSON: NaN (one run has no std) compares equal
            "view": (view.heatmap.tolist(), view.mask.tolist()),
            "sasa": out.tokens.tolist()}


def test_notebook_helpers_create_every_tensor_on_the_requested_device(data):
    profile = load_profile("tiny")
    with torch.device("cpu"):
        want = _helpers(profile, data)
    with torch.device("meta"):
        got = _helpers(profile, data)
    for key, value in want.items():
        assert got[key] == value, key


def test_device_resolution(monkeypatch):
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    auto = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device(None) == resolve_device("auto") == auto
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert resolve_device(None) == torch.device("cpu")  # the environment names the default
    assert resolve_device("meta") == torch.device("meta")  # an explicit name wins
    with pytest.raises(ValueError, match="not a device name"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_dtype_policy_float32_on_the_cpu_the_profiles_on_a_gpu():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert tower_dtype("bfloat16", cpu) == torch.float32
    assert tower_dtype("bfloat16", gpu) == torch.bfloat16
    assert tower_dtype("bfloat16", gpu, "float32") == torch.float32
    assert tower_dtype("float32", cpu, "bfloat16") == torch.bfloat16
    with pytest.raises(ValueError, match="floating dtype"):
        parse_dtype("int8")
    paper = load_profile("paper")
    assert (paper.llm.dtype, paper.gpu.sam_dtype) == ("bfloat16", "bfloat16")


def test_a_forced_dtype_reaches_the_frozen_towers_only_and_the_model_still_runs():
    model = build_model(load_profile("tiny"), device="cpu", dtype="bfloat16")
    assert model.cascade.sam.image_encoder.patch_embed.proj.weight.dtype == torch.bfloat16
    assert model.describer.llava.lm_head.weight.dtype == torch.bfloat16
    trainable = {p.dtype for p in model.trainable_parameters()}
    assert trainable == {torch.float32}  # SAM's decoder, SASA, LoRA (peft keeps adapters in float32)
    assert {p.dtype for p in model.coarse.parameters()} == {torch.float32}  # CLIP: float32 everywhere
    enc = model.encode(torch.rand(1, 3, 64, 64), "fabric")
    assert enc.embeddings.dtype == torch.float32  # what the trainable decoder reads
    assert len(model.diagnose(torch.rand(1, 3, 64, 64), "fabric", max_new_tokens=2)) == 1


def test_default_build_is_float32_on_the_cpu_whatever_the_profile_says():
    model = build_model(load_profile("tiny").replace(**{"llm.dtype": "bfloat16"}), device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_to_device_moves_dataclasses_containers_and_leaves_the_rest():
    model = build_model(load_profile("tiny"), device="cpu")
    enc = model.encode(torch.rand(2, 3, 64, 64), "fabric")
    moved = to_device({"enc": enc, "n": 3, "xs": [torch.zeros(1, device="cpu")]}, "meta")
    assert moved["n"] == 3 and moved["xs"][0].device.type == "meta"
    assert moved["enc"].embeddings.is_meta and moved["enc"].coarse.mask.is_meta
    assert moved["enc"].coarse.terms == enc.coarse.terms and not enc.embeddings.is_meta  # a copy, not in place


def test_text_cache_follows_the_model_to_another_device():
    model = build_model(load_profile("tiny"), device="cpu")
    feats, _ = model.text("fabric")
    model.to("meta")
    moved, tokens = model.text("fabric")  # cached on the CPU, asked for on meta
    assert moved.is_meta and tokens.is_meta and not feats.is_meta


def test_inputs_on_the_cpu_enter_a_model_on_another_device():
    """Where no value is read on the host (SAM's encoder, CLIP's towers), a model on ``meta`` stands in for a
    GPU: CPU inputs must be moved where the model is, or the first operation fails."""
    model = build_model(load_profile("tiny"), device="cpu").to("meta")
    images = torch.rand(2, 3, 64, 64, device="cpu")
    emb = model.cascade.embed(images)  # images on the CPU, SAM on meta
    assert emb.is_meta and emb.shape == (2, 32, 8, 8) and emb.dtype == torch.float32
    assert model.coarse.zero_shot.encode_text(["a photo of a fabric"]).is_meta  # tokens moved to CLIP
    assert all(f.is_meta for f in model.coarse.calibrator.extractor(images))  # the few-shot backbone
    assert model.sasa(emb, torch.ones(2, 64, 64, device="meta"), torch.rand(1, 5, 32, device="meta")).tokens.is_meta


def test_a_checkpoint_written_from_gpu_tensors_loads_on_the_cpu(tmp_path):
    """A file whose tensors were saved on ``cuda:0`` (every storage tagged so, as ``torch.save`` tags CUDA
    tensors) loads into a model on the CPU; and the package itself writes CPU tensors."""
    from samllava.model.checkpoint import save_checkpoint
    from samllava.train.end_to_end import param_groups

    profile = load_profile("tiny")
    trained = build_model(profile, device="cpu", seed=3)
    with torch.no_grad():
        for p in trained.trainable_parameters():
            p.add_(0.01)
    opt = torch.optim.Adam(param_groups(trained))
    plain = save_checkpoint(trained, opt, 0, [], tmp_path / "plain.pt")
    assert all(t.device.type == "cpu" for t in torch.load(plain, weights_only=True)["model"].values())
    entry = (0, lambda storage: "cuda:0", lambda storage, location: None)  # tag every storage as a GPU one
    torch.serialization._package_registry.append(entry)
    torch.serialization._package_registry.sort(key=lambda e: e[0])
    try:
        torch.save({**torch.load(plain, weights_only=True), "model": trained.trainable_state()}, tmp_path / "gpu.pt")
    finally:
        torch.serialization._package_registry.remove(entry)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(tmp_path / "gpu.pt", weights_only=True)  # really a GPU file
    fresh = build_model(profile, device="cpu", seed=3)
    load_checkpoint(fresh, tmp_path / "gpu.pt")
    for k, v in trained.trainable_state().items():
        torch.testing.assert_close(fresh.trainable_state()[k], v, rtol=0, atol=0, msg=k)


def test_every_command_and_notebook_takes_a_device(tmp_path):
    import json

    import nbformat

    from samllava.cli import build_parser
    from samllava.notebook.runner import numbered_notebooks, reproduce

    parser = build_parser()
    for cmd in (["evaluate", "--data", "d", "--out", "o"], ["diagnose", "i", "--out", "o"], ["train", "--out", "o"],
                ["reproduce"], ["bench"]):
        assert parser.parse_args([*cmd, "--device", "cuda:1"]).device == "cuda:1", cmd[0]
    for path in numbered_notebooks():
        cells = json.loads(path.read_text())["cells"]
        params = next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
        assert any(line.startswith("device = None") for line in params["source"]), path.name
    book = nbformat.v4.new_notebook()
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell("device = None")
    cell.metadata["tags"] = ["parameters"]
    book.cells = [cell, nbformat.v4.new_code_cell("assert device == 'cpu'")]
    (tmp_path / "nb").mkdir()
    nbformat.write(book, tmp_path / "nb" / "01_x.ipynb")
    reproduce(profile="tiny", directory=tmp_path / "nb", output_dir=tmp_path / "out", device="cpu", log=lambda m: None)


@pytest.mark.skipif(not os.environ.get("SAMLLAVA_GPU_TESTS"), reason="a GPU check (SAMLLAVA_GPU_TESTS=1)")
def test_gpu_round_trip_of_a_checkpoint(data, tmp_path):  # pragma: no cover - run by the GPU issue's script
    profile = load_profile("tiny")
    gpu = build_model(profile, device="cuda")
    examples = prepare(gpu, data, 64, shots=1, progress=False)
    train(gpu, examples, epochs=1, out_dir=tmp_path, progress=False)
    cpu = load_model(profile, tmp_path, device="cpu")
    back = build_model(profile, device="cuda")
    load_checkpoint(back, tmp_path)
    for k, v in gpu.trainable_state().items():
        if ".lora_" not in k:  # load_model folds LoRA into the weights
            torch.testing.assert_close(cpu.trainable_state()[k.replace(WRAPPED, DESCRIBER, 1)], v.cpu(), msg=k)
        torch.testing.assert_close(back.trainable_state()[k], v, msg=k)
