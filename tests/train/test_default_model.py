"""The default model is trained once: a second process (here, a second thread) that asks for it meanwhile
waits on the lock and then uses what the first one trained."""
import threading
import time

from samllava.assets import weights
from samllava.core.config import load_profile
from samllava.core.results import write_json
from samllava.train import default_model
from samllava.train.default_model import CHECKPOINT, DONE, default_checkpoint, default_model_dir


def test_two_callers_train_once(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path))
    trained, logs = [], []

    def fake_training(profile, out, progress, log, device, micro_batch):
        trained.append(threading.current_thread().name)
        time.sleep(1.0)  # long enough for the other caller to find the lock taken
        (out / CHECKPOINT).parent.mkdir(parents=True, exist_ok=True)
        (out / CHECKPOINT).write_bytes(b"weights")
        write_json(out / DONE, {"profile": profile.name})
        return out

    monkeypatch.setattr(default_model, "_train_default", fake_training)
    profile = load_profile("tiny")
    got = {}

    def ask(name):
        got[name] = default_checkpoint(profile, progress=False, log=lambda m: logs.append((name, m)))

    threads = [threading.Thread(target=ask, args=(n,), name=n) for n in ("first", "second")]
    threads[0].start()
    time.sleep(0.2)
    threads[1].start()
    for t in threads:
        t.join(timeout=30)
    assert trained == ["first"]  # one training
    assert got["first"] == got["second"] == default_model_dir(profile) / CHECKPOINT
    said = [m for n, m in logs if n == "second"]
    assert any("waiting for it" in m for m in said) and any("the other process trained it" in m for m in said)
    assert (default_model_dir(profile).parent / f".{default_model_dir(profile).name}.lock").is_file()
    # asked again: found at once, no lock, no training
    assert default_checkpoint(profile, train_if_missing=False) == got["first"] and trained == ["first"]
