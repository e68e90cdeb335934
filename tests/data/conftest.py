"""Data fixtures: miniature MVTec AD / VisA in their real layouts and a small synthetic set, written once
per session."""

from pathlib import Path

import pytest

from samllava.data import generate_mvtec_miniature, generate_synthetic, generate_visa_miniature


@pytest.fixture(scope="session")
def mvtec_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_mvtec_miniature(tmp_path_factory.mktemp("mvtec") / "mvtec_ad", categories=("bottle", "grid"),
                                    n_train=3, n_good=2, n_per_defect=2, size=48)


@pytest.fixture(scope="session")
def visa_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_visa_miniature(tmp_path_factory.mktemp("visa") / "VisA", categories=("candle", "pcb1"),
                                   n_train=4, n_test_good=2, n_anomaly=3, size=40)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synthetic") / "syn", n_train=4, n_test=12, size=96, seed=0)
