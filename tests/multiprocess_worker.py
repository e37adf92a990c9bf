"""A short finetune run by `accelerate launch` from tests/test_multiprocess.py (a fresh interpreter per rank:
ranks forked from the pytest process hung in their first conv once the parent had used its thread pool)."""

from __future__ import annotations

import sys

import torch


def finetune_curve(out: str, objective: str, batch_size: int, holdout: int) -> None:
    """A short finetune of a tiny resnet18 (one block dropped) on 14 random images; the main process saves the
    per-step loss curve, the held-out curve and the weights to `out`."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from hf_practise import FinetuneConfig, build_pruned, get_family, mimic_finetune
    from tests.conftest import tiny_resnet

    AcceleratorState._reset_state(reset_partial_state=True)  # a state left by an earlier test in this process
    acc = Accelerator(cpu=True)
    teacher = tiny_resnet("resnet18")
    family = get_family(teacher)
    student = build_pruned(teacher, family, family.candidates(teacher)[:1])
    images = torch.randn(14, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    config = FinetuneConfig(iterations=5, batch_size=batch_size, objective=objective, holdout=holdout, holdout_every=2)
    res = mimic_finetune(
        student,
        teacher,
        family,
        images,
        config=config,
        accelerator=acc,
        labels=torch.arange(14) % 5,
        seed=3,
        log_every=1,
    )
    if acc.is_main_process:
        torch.save({"losses": res.losses, "holdout": res.holdout_curve, "state": student.state_dict()}, out)
    acc.wait_for_everyone()
    AcceleratorState._reset_state(reset_partial_state=True)


if __name__ == "__main__":
    out, objective, batch_size, holdout = sys.argv[1:]
    finetune_curve(out, objective, int(batch_size), int(holdout))
