import pandas as pd
import pytest

from samllava.core import results


def test_table_has_provenance_and_roundtrips(tmp_path):
    df = pd.DataFrame({"category": ["a", "b"], "image_auroc": [91.234, float("nan")]})
    paths = results.write_table(df, "t1", profile="tiny", dataset="synthetic", directory=tmp_path)
    md = paths["md"].read_text()
    assert "**profile**: tiny" in md and "synthetic" in md and "random" in md
    assert "91.2" in md and "n/a" in md
    back = results.read_table(paths["csv"])
    assert list(back.columns) == ["category", "image_auroc"]
    assert back["image_auroc"][0] == pytest.approx(91.234)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with results.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_save_figure_png(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    path = results.save_figure(fig, "f", directory=tmp_path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_user_mode_opens_private_temporary_folders_and_files(tmp_path):
    import os
    import stat
    import tempfile

    folder = tempfile.mkdtemp(dir=tmp_path)
    file = tmp_path / "f.txt"
    file.write_text("x")
    os.chmod(file, 0o600)
    old = os.umask(0o027)
    try:
        results.user_mode(folder, directory=True)
        results.user_mode(file)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o750
    assert stat.S_IMODE(os.stat(file).st_mode) == 0o640
