"""The data sets' archives are built from the miniature MVTec AD / VisA folders of tests/data."""
from tests.data.conftest import mvtec_root, visa_root  # noqa: F401  (session fixtures shared with tests/data)
