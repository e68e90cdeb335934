"""``samllava train``: the profile's default model, or a model trained on ``--data`` into ``--out``
(``torchrun`` for several processes: DistributedDataParallel, NCCL on GPUs and gloo on the CPU,
:mod:`samllava.core.distributed`). The model in ``--out`` is then used with ``--checkpoint OUT``."""
from __future__ import annotations

import sys

import torch

from samllava.cli.common import check_dtype, data_of, device_of, in_process_group
from samllava.core.config import load_profile
from samllava.train.default_model import DEFAULT_SHOTS, train_default, train_on_data
from samllava.train.end_to_end import world


def train_cli(args) -> int:
    """``--data`` is read (its layout checked) before a model is built."""
    device = device_of(args)
    check_dtype(args)
    if args.data is not None:
        data_of("--data", args.data)
    return in_process_group(_train, args, device)


def _train(args, device) -> int:
    profile = load_profile(args.profile)
    progress = not args.no_progress
    if args.out is None:
        out = train_default(profile, progress=progress, device=device, micro_batch=args.micro_batch, log=_stderr)
        print(f"default model of profile {profile.name!r}: {out}")
        return 0
    shots = DEFAULT_SHOTS if args.shots is None else args.shots
    model, history = train_on_data(profile, args.data, args.out, shots=shots, epochs=args.epochs, progress=progress,
                                   log=_stderr, device=device, dtype=args.dtype, micro_batch=args.micro_batch)
    rank, size = world()
    if size > 1:
        # report a digest of the weights so callers can check that all ranks agree
        digest = torch.stack([p.detach().double().sum() for p in model.trainable_parameters()]).sum()
        sys.stdout.write(f"rank {rank} world {size} steps {len(history)} digest {digest.item():.10e}\n")  # one write:
        sys.stdout.flush()  # the ranks share the pipe, and print() writes the newline apart
    elif rank == 0:
        print(f"trained model: {args.out}; use it with: samllava diagnose IMAGES --support NORMALS "
              f"--checkpoint {args.out} --out OUT")
    return 0


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)
