
import pytest
import torch

# Keep the suite deterministic and light on a 2-core machine (small ops run fastest on one thread).
torch.set_num_threads(1)  # tiny tensors: one thread avoids oversubscription overhead


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
