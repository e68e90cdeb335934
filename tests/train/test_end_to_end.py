"""End-to-end training (tiny profile): the loss falls, resume ends where a straight run ends,
checkpoints refuse other models, two CPU processes stay in step."""
import os
import re
import subprocess
import sys

import pytest
import torch

from samllava.core.config import load_profile
from samllava.data import generate_synthetic, load_dataset
from samllava.model.sam_llava import build_model
from samllava.evaluate.answers import answer
from samllava.model.checkpoint import load_checkpoint, optimizer_state
from samllava.model.encoded_data import prepare
from samllava.train.end_to_end import param_groups, train


def _model(seed=0, **overrides):
    torch.manual_seed(seed)  # the global RNG must not matter: build_model seeds its own
    p = load_profile("tiny")
    if overrides:
        p = p.replace(**overrides)
    return build_model(p)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = generate_synthetic(
        tmp_path_factory.mktemp("syn"), categories=["fabric"], n_train=2, n_test=8, size=64, seed=1
    )
    return load_dataset(root)


def test_loss_falls(data):
    model = _model(**{"train.epochs": 20})
    ex = prepare(model, data, 64, shots=1, progress=False)
    hist = train(model, ex, progress=False)
    first = sum(h["total"] for h in hist[:2]) / 2
    last = sum(h["total"] for h in hist[-2:]) / 2
    assert last < 0.8 * first, (first, last)


def test_resume_ends_where_straight_run_ends(data, tmp_path):
    straight = _model(seed=3)
    ex = prepare(straight, data, 64, shots=1, progress=False)
    train(straight, ex, epochs=3, progress=False)

    resumed = _model(seed=3)
    # "killed" after epoch 1
    hist_a = train(
        resumed, ex, epochs=3, out_dir=tmp_path, progress=False, stop_after_epoch=0
    )
    assert len(hist_a) == 2  # 8 images, batch 4
    fresh = _model(seed=99)  # a new process: another global RNG state; the checkpoint restores the rest
    hist_b = train(fresh, ex, epochs=3, out_dir=tmp_path, progress=False)
    assert len(hist_b) == 6
    a, b = straight.trainable_state(), fresh.trainable_state()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)


def test_checkpoint_of_another_model_is_refused(data, tmp_path):
    model = _model()
    ex = prepare(model, data, 64, shots=0, progress=False)
    train(model, ex, epochs=1, out_dir=tmp_path, progress=False)
    # the training answers travel with the checkpoint: the loaded describer drafts from them
    assert model.describer.phrasebook == sorted(set(t for e in ex for t in e.targets))
    reloaded = _model()
    load_checkpoint(reloaded, tmp_path)
    assert reloaded.describer.phrasebook == model.describer.phrasebook and reloaded.describer._book_ids is not None
    other = _model(**{"sasa.align_dim": 16})
    with pytest.raises(ValueError, match="sasa"):
        load_checkpoint(other, tmp_path)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint(model, tmp_path / "bad.pt")


@pytest.mark.slow
def test_two_cpu_processes_train_what_one_process_trains(tmp_path, monkeypatch):
    """The claim: ``torchrun --nproc_per_node 2`` (DistributedDataParallel, gloo) training one epoch of the
    tiny profile (zero-shot examples), each rank taking half of every batch of ``train.batch_size`` images,
    follows one process training the same batches: the ranks end bitwise identical; every step's losses
    equal one process's to 1e-4 (relative); every trainable tensor ends within 5e-4 of one process's and
    with the same Adam first moment (the running mean of its gradients, to 1e-6), except where the
    gradient is (nearly) zero in exact arithmetic: attention key biases, which the softmax cancels, the
    first convolution of SAM's mask-prompt encoder, whose LayerNorm cancels all but a few directions, and
    tensors whose first moment stays below 1e-4 in both runs. There Adam scales the rounding noise of a
    gradient summed in another order up to steps of size lr (with SGD the same split agrees to 1e-6:
    test_micro_batches_accumulate_the_gradient_of_the_whole_batch)."""
    monkeypatch.setenv("SAMLLAVA_DATA_DIR", str(tmp_path / "data"))
    from samllava.data.synthetic import ensure_synthetic

    profile = load_profile("tiny")
    root = ensure_synthetic(profile, seed=1)  # generated once, before both ranks read it
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",  # a free port
           "-m", "samllava", "train", "--profile", "tiny", "--epochs", "1", "--shots", "0",
           "--out", str(tmp_path / "two"), "--no-progress", "--device", "cpu"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = re.findall(r"rank (\d) world 2 steps (\d+) digest (-?\d\.\d+e[+-]\d+)", run.stdout)
    assert sorted(r for r, _, _ in lines) == ["0", "1"], run.stdout
    assert lines[0][2] == lines[1][2]  # identical weights on both ranks

    one = build_model(profile, device="cpu")
    history = train(one, prepare(one, load_dataset(root), 64, progress=False), epochs=1, out_dir=tmp_path / "one",
                    progress=False)
    two, ref = (torch.load(tmp_path / d / "last.pt", map_location="cpu", weights_only=True) for d in ("two", "one"))
    moments = {k: optimizer_state(s)["state"] for k, s in (("two", two), ("ref", ref))}
    assert [h["step"] for h in two["history"]] == [h["step"] for h in history] and int(lines[0][1]) == len(history)
    for a, b in zip(two["history"], history):
        assert all(a[k] == pytest.approx(b[k], rel=1e-4) for k in ("total", "seg", "gen")), (a, b)
    ids = {id(q): n for n, q in one.named_parameters()}
    names = [ids[id(q)] for g in param_groups(one) for q in g["params"]]  # the optimiser's numbering
    checked = 0
    for i, name in enumerate(names):
        if i not in moments["ref"]:  # never given a gradient (SAM's point embeddings, IoU head)
            assert i not in moments["two"], name
            continue
        m_two, m_one = moments["two"][i]["exp_avg"], moments["ref"][i]["exp_avg"]
        if name.endswith("k_proj.bias") or ".mask_downscaling.0." in name:  # degenerate by construction
            continue
        if m_one.abs().max() < 1e-4:  # a negligible gradient, in both runs
            assert m_two.abs().max() < 1e-4, name
            continue
        torch.testing.assert_close(m_two, m_one, rtol=1e-3, atol=1e-6, msg=name)
        torch.testing.assert_close(two["model"][name], ref["model"][name], rtol=0, atol=5e-4, msg=name)
        checked += 1
    assert checked > len(moments["ref"]) // 2  # most tensors


class _Probe:
    """Memory counters of a fake device on which every image costs 1 unit and 2.2 units are free."""

    def start(self):
        pass

    def peak_bytes(self):
        return 1

    def free_bytes(self):
        return 2.2

    def release(self):
        pass


def test_micro_batches_accumulate_the_gradient_of_the_whole_batch(data):
    """A batch of 4 run as micro-batches (1 image measured, then 2 at a time: 3 forward/backward passes
    per step) gives the weights of the batch in one piece, up to float rounding."""
    from samllava.core.batching import BatchSizer
    from samllava.train.end_to_end import epoch_batches, train_step

    whole, parts = _model(seed=5), _model(seed=5)
    ex = prepare(whole, data, 64, shots=1, progress=False)
    sizer = BatchSizer("cpu", cap=4, probe=_Probe(), fraction=1.0)
    results = {}
    for name, model, sz in (("whole", whole, None), ("parts", parts, sizer)):
        # SGD: an error in a gradient stays its own size (Adam would scale the rounding noise of the gradients
        # that are zero in exact arithmetic up to steps of size lr, see the two-process test)
        opt = torch.optim.SGD(param_groups(model), lr=model.profile.train.lr)
        model.train()
        results[name] = [train_step(model, opt, ex[c], idx, sizer=sz)
                         for epoch in range(2) for c, idx in epoch_batches(ex, 4, 0, epoch)]
    assert sizer.size == 2 and sizer.item_bytes == 1
    for a, b in zip(results["parts"], results["whole"]):
        assert all(a[k] == pytest.approx(b[k], rel=1e-6) for k in ("total", "seg", "gen")), (a, b)
    for name, value in whole.trainable_state().items():
        torch.testing.assert_close(parts.trainable_state()[name], value, rtol=0, atol=1e-6, msg=name)


@pytest.fixture(scope="module")
def yes_no_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("yes_no")
    cats = ["fabric", "concrete"]
    train_set = load_dataset(generate_synthetic(root / "train", categories=cats, n_train=2, n_test=16, size=64, seed=1))
    held_out = load_dataset(generate_synthetic(root / "eval", categories=cats, n_train=2, n_test=16, size=64, seed=0))
    return train_set, held_out


def test_yes_no_accuracy_rises_well_above_chance_with_a_small_budget(yes_no_data):
    """SASA + LoRA learn to read the mask: 15 steps on the training images (answers only), then the
    held-out answers. The masks are the ground truth, so that the test measures the description
    stage (SASA -> LLaVA), not the random tiny SAM; the facts sentence is left out, so that the mask reaches
    the language model through SASA alone. With the literal Eq. 8 keys (all cells, since removed) this budget
    stayed at 50 %: see docs/decisions.md."""
    from samllava.metrics import parse_yes_no

    train_set, held_out = yes_no_data
    model = _model()
    model.grounded_questions = lambda questions, facts: list(questions)  # no facts in words: SASA alone
    tr = prepare(model, train_set, 64, shots=0, progress=False)
    ev = prepare(model, held_out, 64, shots=0, progress=False)
    d = model.describer

    def accuracy() -> tuple[float, set]:
        texts = answer(model, ev, max_new_tokens=2, progress=False, oracle_masks=True)  # M_fine := ground truth
        model.train()
        answers = [parse_yes_no(t) for ts in texts for t in ts]
        ok = [a == bool(label) for a, label in zip(answers, [y for ex in ev for y in ex.labels])]
        return float(sum(ok)) / len(ok), set(answers)

    before, _ = accuracy()
    params = [p for p in [*model.sasa.parameters(), *d.parameters()] if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-2)
    rng = torch.Generator().manual_seed(0)
    losses = []
    for step in range(15):
        ex = tr[step % len(tr)]
        idx = torch.randperm(len(ex), generator=rng)[:8]
        tokens = model.align_mask(ex.enc.select(idx), ex.gt[idx])
        questions = [ex.questions[i] for i in idx]  # as answer() asks them (no facts sentence here)
        # "Yes" / "No"
        loss = d.loss(
            ex.enc.visual[idx], tokens, questions, [ex.targets[i].split(",")[0] for i in idx]
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    after, said = accuracy()
    assert sum(losses[-3:]) < sum(losses[:3])
    assert after >= 0.8 and after > before + 0.2, (before, after)
    assert said == {True, False}  # both answers given, not one for everything


def test_sasa_learning_rate_is_its_own_group():
    model = _model(**{"train.lr": 1e-3, "train.sasa_lr": 5e-3})
    groups = param_groups(model)
    sasa = {id(p) for p in model.sasa.parameters()}
    assert [g["lr"] for g in groups] == [1e-3, 5e-3]
    assert {id(p) for p in groups[1]["params"]} == sasa and not sasa & {id(p) for p in groups[0]["params"]}
    assert sum(len(g["params"]) for g in groups) == len(model.trainable_parameters())
    assert [g["lr"] for g in param_groups(_model())] == [1e-2, 1e-2]  # tiny: None -> lr
