"""Training (Sec. 3.5, Sec. 4.4).

* :mod:`.end_to_end` - Adam on L_total = alpha L_seg + gamma L_gen (Eq. 9), resumable, under torchrun too;
* :mod:`.fine_stage` - the SAM side alone (Eq. 6): the warm-up before end-to-end training;
* :mod:`.default_model` - the profile's trained model that ``diagnose`` and ``evaluate`` use by default.
"""
from samllava.train.end_to_end import epoch_batches, param_groups, train, train_step, warm_up_sam

__all__ = ["epoch_batches", "param_groups", "train", "train_step", "warm_up_sam"]
