"""Training of the prompt encoder, decoder and multi-scale parts (samllava.train.fine_stage)."""
import torch

from samllava.core.config import load_profile
from samllava.sam.cascade import build_cascade
from samllava.train.fine_stage import train_segmentation


def _data(n: int = 8, side: int = 64):
    g = torch.Generator().manual_seed(0)
    gt = torch.zeros(n, side, side, dtype=torch.bool)
    coarse = torch.zeros_like(gt)
    for i in range(n):
        y, x = torch.randint(4, 36, (2,), generator=g).tolist()
        hh, ww = torch.randint(8, 24, (2,), generator=g).tolist()
        gt[i, y : y + hh, x : x + ww] = True
        coarse[i, y + 2 : y + hh + 4, x - 3 : x + ww - 2] = True  # a shifted, imprecise prompt
    return torch.rand(n, 3, side, side, generator=g), coarse, gt


def test_loss_falls_and_only_the_light_parts_learn():
    torch.manual_seed(0)
    cascade = build_cascade(load_profile("tiny"))
    images, coarse, gt = _data()
    embeddings = cascade.embed(images)
    encoder_before = [p.clone() for p in cascade.sam.image_encoder.parameters()]
    fuse_before = cascade.prompt_learner.fuse.weight.clone()
    losses = train_segmentation(cascade, embeddings, coarse, gt, steps=30, lr=1e-3, batch_size=4, progress=False)
    assert len(losses) == 30 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < 0.95 * sum(losses[:3]) / 3  # about 0.89 with this seed
    assert all(torch.equal(a, b) for a, b in zip(encoder_before, cascade.sam.image_encoder.parameters()))
    assert not torch.equal(fuse_before, cascade.prompt_learner.fuse.weight)  # the multi-scale prompt left zero
    assert not cascade.training  # mode restored


def test_training_is_seeded():
    images, coarse, gt = _data(n=4)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        cascade = build_cascade(load_profile("tiny"))
        runs.append(
            train_segmentation(cascade, cascade.embed(images), coarse, gt, steps=3, batch_size=3, progress=False)
        )
    assert runs[0] == runs[1]
