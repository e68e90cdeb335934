"""MVTec AD, VisA and own-data loaders on miniatures written in the real layouts, and every layout error."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from samllava.data import (
    CategoryData, Sample, generate_mvtec_miniature, generate_visa_miniature, load_dataset, load_folder, load_mvtec,
    load_visa,
)
from samllava.data.synthetic import MVTEC_DEFECTS


# ----------------------------------------------------------------------------- MVTec AD

def test_mvtec_miniature_has_the_real_layout(mvtec_root: Path):
    bottle = mvtec_root / "bottle"
    assert sorted(p.name for p in (bottle / "test").iterdir()) == sorted(MVTEC_DEFECTS["bottle"] + ("good",))
    assert (bottle / "train" / "good" / "000.png").is_file()
    assert (bottle / "test" / "broken_large" / "001.png").is_file()
    assert (bottle / "ground_truth" / "broken_large" / "001_mask.png").is_file()
    assert not (bottle / "ground_truth" / "good").exists()
    assert set(np.unique(np.asarray(Image.open(bottle / "ground_truth" / "broken_large" / "000_mask.png")))) <= {0, 255}
    assert Image.open(mvtec_root / "grid" / "train" / "good" / "000.png").mode == "L"  # a greyscale category


def test_load_mvtec(mvtec_root: Path):
    data = load_mvtec(mvtec_root)
    assert sorted(data) == ["bottle", "grid"]
    bottle = data["bottle"]
    assert isinstance(bottle, CategoryData) and bottle.has_masks and bottle.root == mvtec_root / "bottle"
    assert [s.image_path.name for s in bottle.train] == ["000.png", "001.png", "002.png"]
    assert all(s.split == "train" and s.label == 0 and s.defect_type == "good" for s in bottle.train)
    assert len(bottle.test) == 2 + 2 * len(MVTEC_DEFECTS["bottle"])
    for s in bottle.test:
        assert s.label == int(s.defect_type != "good")
        assert (s.mask_path is None) == (s.label == 0)
        if s.mask_path is not None:
            assert (
                s.mask_path == mvtec_root / "bottle" / "ground_truth" / s.defect_type / f"{s.image_path.stem}_mask.png"
            )
    assert list(load_mvtec(mvtec_root, categories=["grid"])) == ["grid"]


def test_mvtec_tensors(mvtec_root: Path):
    grid = load_mvtec(mvtec_root, ["grid"])["grid"]
    images = grid.load_images(grid.test, 32)
    masks = grid.load_masks(grid.test, 32)
    assert images.shape == (len(grid.test), 3, 32, 32) and images.dtype == torch.float32
    assert torch.equal(images[:, 0], images[:, 1])  # greyscale source: channels equal
    labels = torch.tensor([s.label for s in grid.test])
    assert masks.shape == (len(grid.test), 1, 32, 32)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(masks.flatten(1).amax(1) > 0, labels == 1)  # a mask exactly for the anomalous images


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_mvtec_defect_image_without_mask(mvtec_root: Path, tmp_path: Path):
    root = _copy(mvtec_root, tmp_path / "m")
    (root / "bottle" / "ground_truth" / "contamination" / "001_mask.png").unlink()
    with pytest.raises(ValueError, match=r"contamination/001.png: defect image with no mask"):
        load_mvtec(root, ["bottle"])


def test_mvtec_mask_without_image(mvtec_root: Path, tmp_path: Path):
    root = _copy(mvtec_root, tmp_path / "m")
    (root / "bottle" / "test" / "contamination" / "001.png").unlink()
    with pytest.raises(ValueError, match=r"001_mask.png: mask with no image"):
        load_mvtec(root, ["bottle"])
    root2 = _copy(mvtec_root, tmp_path / "m2")
    shutil.copytree(root2 / "bottle" / "ground_truth" / "contamination", root2 / "bottle" / "ground_truth" / "scratch")
    with pytest.raises(ValueError, match=r"ground_truth/scratch/000_mask.png: mask with no image"):
        load_mvtec(root2, ["bottle"])


def test_mvtec_mask_size_differs(mvtec_root: Path, tmp_path: Path):
    root = _copy(mvtec_root, tmp_path / "m")
    mask = root / "bottle" / "ground_truth" / "broken_small" / "000_mask.png"
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(mask)
    with pytest.raises(ValueError, match=r"000_mask.png is 20x20.*broken_small/000.png is 48x48"):
        load_mvtec(root, ["bottle"])


def test_mvtec_missing_ground_truth_and_empty_category(mvtec_root: Path, tmp_path: Path):
    root = _copy(mvtec_root, tmp_path / "m")
    shutil.rmtree(root / "grid" / "ground_truth")
    with pytest.raises(FileNotFoundError, match=r"grid/ground_truth.*load_folder"):
        load_mvtec(root, ["grid"])
    for p in (root / "bottle" / "train" / "good").iterdir():
        p.unlink()
    with pytest.raises(ValueError, match=r"train/good: empty category 'bottle'"):
        load_mvtec(root, ["bottle"])


def test_stray_files_are_errors_not_skipped(mvtec_root: Path, tmp_path: Path):
    root = _copy(mvtec_root, tmp_path / "m")
    (root / "bottle" / "test" / "good" / "notes.txt").write_text("x")
    (root / "bottle" / "test" / "good" / ".DS_Store").write_text("x")  # hidden files are ignored
    with pytest.raises(ValueError, match=r"notes.txt: not an image file"):
        load_mvtec(root, ["bottle"])


def test_wrong_roots(mvtec_root: Path, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_mvtec(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: no category folders"):
        load_mvtec(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="itself a category folder"):
        load_mvtec(mvtec_root / "bottle")
    with pytest.raises(FileNotFoundError, match=r"category 'cable' not found"):
        load_mvtec(mvtec_root, ["cable"])
    with pytest.raises(FileNotFoundError, match=r"split_csv/1cls.csv"):
        load_visa(mvtec_root)


def test_half_a_category_is_reported(mvtec_root: Path, tmp_path: Path):
    root = _copy(mvtec_root, tmp_path / "m")
    shutil.rmtree(root / "grid" / "test")
    with pytest.raises(FileNotFoundError, match=r"grid/test: category 'grid' has no test/"):
        load_folder(root)
    (root / "docs").mkdir()  # a folder with neither train/ nor test/ is not a category
    assert list(load_mvtec(root, ["bottle"])) == ["bottle"]


# ----------------------------------------------------------------------------- VisA

def test_visa_miniature_has_the_real_layout(visa_root: Path):
    lines = (visa_root / "split_csv" / "1cls.csv").read_text().splitlines()
    assert lines[0] == "object,split,label,image,mask"
    normal = [row for row in lines[1:] if ",normal," in row]
    anomaly = [row for row in lines[1:] if ",anomaly," in row]
    assert all(row.endswith(",") for row in normal)  # normal rows: empty mask field
    assert "candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png" in anomaly
    assert (visa_root / "candle" / "Data" / "Images" / "Normal" / "0000.JPG").is_file()  # 4-digit normal names
    assert (visa_root / "candle" / "image_anno.csv").read_text().startswith("image,label,mask\n")
    ids = np.unique(np.asarray(Image.open(visa_root / "candle" / "Data" / "Masks" / "Anomaly" / "001.png")))
    assert ids.tolist() == [0, 1, 2]  # several defect ids in one mask


def test_load_visa(visa_root: Path):
    data = load_visa(visa_root)
    assert sorted(data) == ["candle", "pcb1"]
    candle = data["candle"]
    assert len(candle.train) == 4 and len(candle.test) == 2 + 3
    names = [s.image_path.name for s in candle.train]
    assert names == sorted(names) and all(len(n) == len("0000.JPG") for n in names)
    assert all(s.defect_type == "anomaly" for s in candle.test if s.label == 1)
    masks = candle.load_masks(candle.test, 24)
    assert set(masks.unique().tolist()) == {0.0, 1.0}  # multi-id masks binarised
    assert torch.equal(masks.flatten(1).amax(1) > 0, torch.tensor([s.label == 1 for s in candle.test]))
    images = candle.load_images(candle.train, 24)
    assert images.shape == (4, 3, 24, 24)  # non-square 60x40 sources resized


def _rewrite_split(root: Path, edit) -> None:
    path = root / "split_csv" / "1cls.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")


def test_visa_errors(visa_root: Path, tmp_path: Path):
    root = _copy(visa_root, tmp_path / "v1")
    _rewrite_split(root, lambda ls: [row if not row.startswith("candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG")
                                     else row.rsplit(",", 1)[0] + "," for row in ls])
    with pytest.raises(ValueError, match=r"1cls.csv:\d+: defect image .*000.JPG with no mask"):
        load_visa(root, ["candle"])

    root = _copy(visa_root, tmp_path / "v2")
    _rewrite_split(root, lambda ls: [row for row in ls if "Anomaly/002" not in row or not row.startswith("candle")])
    with pytest.raises(ValueError, match=r"Masks/Anomaly/002.png: mask with no image"):
        load_visa(root, ["candle"])

    root = _copy(visa_root, tmp_path / "v3")
    _rewrite_split(root, lambda ls: ["object,split,label,image"] + ls[1:])
    with pytest.raises(ValueError, match="header"):
        load_visa(root)

    root = _copy(visa_root, tmp_path / "v4")
    with pytest.raises(ValueError, match=r"empty category 'capsules'"):
        (root / "capsules").mkdir()
        load_visa(root, ["capsules"])

    root = _copy(visa_root, tmp_path / "v5")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "pcb1" / "Data" / "Masks" / "Anomaly" / "000.png")
    with pytest.raises(ValueError, match=r"Masks/Anomaly/000.png is 5x5 .*Anomaly/000.JPG is 60x40"):
        load_visa(root, ["pcb1"])

    root = _copy(visa_root, tmp_path / "v6")
    (root / "pcb1" / "Data" / "Images" / "Normal" / "0001.JPG").unlink()
    with pytest.raises(FileNotFoundError, match=r"0001.JPG not found"):
        load_visa(root, ["pcb1"])


# ----------------------------------------------------------------------------- own data, load_dataset

def test_folder_without_ground_truth_is_image_level(mvtec_root: Path, tmp_path: Path):
    root = _copy(mvtec_root / "bottle", tmp_path / "my_part")
    shutil.rmtree(root / "ground_truth")
    data = load_folder(root)
    assert list(data) == ["my_part"]
    part = data["my_part"]
    assert not part.has_masks and all(s.mask_path is None for s in part.test)
    assert sum(s.label for s in part.test) == 2 * len(MVTEC_DEFECTS["bottle"])
    assert part.load_masks([s for s in part.test if s.label == 0], 8).sum() == 0
    with pytest.raises(ValueError, match="image-level labels only.*pixel metrics are not available"):
        part.load_masks(part.test, 8)


def test_folder_of_categories_and_dispatch(mvtec_root: Path, visa_root: Path):
    assert sorted(load_folder(mvtec_root)) == ["bottle", "grid"]
    assert list(load_folder(mvtec_root, category="grid")) == ["grid"]
    assert list(load_folder(mvtec_root / "grid", category="my_grid")) == ["my_grid"]
    via_auto = load_dataset(mvtec_root)
    assert [s.image_path for s in via_auto["bottle"].test] == [
        s.image_path for s in load_mvtec(mvtec_root)["bottle"].test
    ]
    assert sorted(load_dataset(visa_root)) == ["candle", "pcb1"]  # split_csv present => VisA
    assert sorted(load_dataset(mvtec_root, kind="mvtec")) == ["bottle", "grid"]
    with pytest.raises(ValueError, match="kind must be one of"):
        load_dataset(mvtec_root, kind="coco")


def test_folder_with_partial_ground_truth_is_an_error(mvtec_root: Path, tmp_path: Path):
    root = _copy(mvtec_root / "bottle", tmp_path / "part")
    shutil.rmtree(root / "ground_truth" / "broken_small")
    with pytest.raises(ValueError, match=r"broken_small/000.png: defect image with no mask"):
        load_folder(root)


def test_load_masks_refuses_missing_mask_when_masks_exist(tmp_path: Path):
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(img)
    data = CategoryData("c", tmp_path, [Sample(img, "c", "train", 0, "good", None)],
                        [Sample(img, "c", "test", 1, "dent", None)], has_masks=True)
    with pytest.raises(ValueError, match=r"a.png: anomalous image without a ground-truth mask"):
        data.load_masks(data.test, 4)


def test_sample_validation(tmp_path: Path):
    p = tmp_path / "x.png"
    with pytest.raises(ValueError, match="split"):
        Sample(p, "c", "val", 0, "good", None)
    with pytest.raises(ValueError, match="contradicts"):
        Sample(p, "c", "test", 1, "good", None)
    with pytest.raises(ValueError, match="label"):
        Sample(p, "c", "test", 2, "dent", None)
    s = Sample(p, "c", "test", 0, "good", None)
    assert s.meta == {} and s.description is None and hash(s) == hash(Sample(p, "c", "test", 0, "good", None))


def test_miniature_generators_reject_unknown_categories(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown MVTec-AD category"):
        generate_mvtec_miniature(tmp_path / "m", categories=["bottel"])
    with pytest.raises(ValueError, match="unknown VisA category"):
        generate_visa_miniature(tmp_path / "v", categories=["candles"])
