"""diagnose's file handling: gathering images from files and folders, unique output names."""
from pathlib import Path

import pytest

from samllava.diagnose.files import gather_images, output_names


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
