"""diagnose's file handling: gathering images from files and folders, unique output names, outputs at the
image's own size, warnings about supports of another size."""
import json
import os
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

from samllava.diagnose.files import (
    differs, full_size, gather_images, jet, output_names, size_summary, size_warnings, write_outputs,
)
from samllava.model.sam_llava import Diagnosis


def test_gather_images_files_and_folders(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    for rel in ("a/2.png", "a/1.jpg", "a/sub/3.PNG", "a/.hidden.png", "a/notes.txt", "x.bmp"):
        (tmp_path / rel).write_bytes(b"")
    got = gather_images([tmp_path / "x.bmp", tmp_path / "a", tmp_path / "a" / "1.jpg"])
    assert [p.relative_to(tmp_path).as_posix() for p in got] == ["x.bmp", "a/1.jpg", "a/2.png", "a/sub/3.PNG"]
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        gather_images([tmp_path / "missing.png"])
    with pytest.raises(ValueError, match="not an image file"):
        gather_images([tmp_path / "a" / "notes.txt"])
    (tmp_path / "none").mkdir()
    with pytest.raises(ValueError, match="folder without images"):
        gather_images([tmp_path / "none"])


def test_output_names_are_unique():
    assert output_names([Path("t/good/000.png"), Path("t/crack/001.png")]) == ["000", "001"]
    assert output_names([Path("t/good/000.png"), Path("t/crack/000.png")]) == ["good_000", "crack_000"]
    assert output_names([Path("a/x/0.png"), Path("b/x/0.png")]) == ["a_x_0", "b_x_0"]


def _diagnosis(side=8):
    heat = np.tile(np.linspace(0, 1, side, dtype=np.float32), (side, 1))  # left to right
    fine = np.zeros((side, side), bool)
    fine[:, -2:] = True  # the right quarter
    return Diagnosis(category="part", score=1.0, heatmap=heat, coarse_mask=fine, fine_mask=fine, answer="yes",
                     description="", terms={})


def test_jet_is_matplotlibs():
    values = np.linspace(-1, 3, 101).reshape(1, -1)
    ours = jet(values)[0].astype(int)
    theirs = (matplotlib.colormaps["jet"]((values[0] + 1) / 4)[:, :3] * 255).round().astype(int)
    assert np.abs(ours - theirs).max() <= 5  # matplotlib reads the same segments from a 256-entry table


def test_masks_and_overlays_come_back_at_the_images_size(tmp_path):
    """The model's 8 x 8 mask on a 40 x 20 photograph: nearest-neighbour mask of the photo's size, the tint where
    the mask is, the photo's own pixels (under the heatmap) elsewhere; files with the usual permissions."""
    Image.new("RGB", (40, 20), (0, 0, 0)).save(tmp_path / "photo.png")
    mask, shown = full_size(_diagnosis(), tmp_path / "photo.png")
    assert mask.size == shown.size == (40, 20)
    m = np.asarray(mask)
    assert set(np.unique(m)) == {0, 255} and m[:, -10:].all() and not m[:, :-10].any()
    rgb = np.asarray(shown).astype(int)
    assert (rgb[:, -5:, 0] > rgb[:, -5:, 2]).all()  # red tint over the mask
    assert rgb[:, :5, 2].min() > 0 and rgb[:, :5, 0].max() < 20  # jet's blue end of the map over black elsewhere
    old = os.umask(0o027)
    try:
        paths = write_outputs(_diagnosis(), tmp_path / "photo.png", tmp_path / "out", {"image": "photo.png"})
    finally:
        os.umask(old)
    for path in paths.values():
        assert path.stat().st_mode & 0o777 == 0o640  # 0666 under the umask, not mkstemp's private 0600
    report = json.loads(paths["report"].read_text())
    assert report["image_size"] == [40, 20] and report["model_image_size"] == 8


def test_size_warnings(tmp_path):
    for name, size in (("s0", (64, 64)), ("s1", (64, 64)), ("s2", (60, 60)), ("same", (66, 62)),
                       ("big", (256, 256)), ("wide", (64, 40))):
        Image.new("RGB", size).save(tmp_path / f"{name}.png")
    support = [tmp_path / f"s{i}.png" for i in range(3)]
    files = [tmp_path / f"{n}.png" for n in ("same", "big", "wide")]
    warned = size_warnings(files, support)
    assert set(warned) == {tmp_path / "big.png", tmp_path / "wide.png"}  # the most common support size: 64 x 64
    assert "256x256" in warned[tmp_path / "big.png"] and "64x64" in warned[tmp_path / "big.png"]
    assert size_warnings(files, []) == {} and size_summary({}, 3) is None
    assert size_summary(warned, 3).startswith("warning: 2 of 3 image(s) differ in size or aspect")
    assert not differs((66, 62), (64, 64)) and differs((64, 40), (64, 64))
