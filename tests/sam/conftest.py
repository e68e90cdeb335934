import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # The SAM tests run many tiny ops; on a shared 2-core machine two intra-op threads make each op
    # 10-20x slower than one (thread hand-off dominates), so these tests use one thread.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
