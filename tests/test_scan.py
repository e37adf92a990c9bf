"""The recoverability scan's adaptor training: both optimizers lower the error, and a run that raises it keeps
the identity adaptors and says so."""

from __future__ import annotations

import pytest
import torch

from hf_practise import ScanConfig, get_family
from hf_practise.recoverability import score_block, teacher_features

from .conftest import tiny_resnet


@pytest.fixture(scope="module")
def setup():
    model = tiny_resnet("resnet26").eval()
    family = get_family(model)
    images = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    targets = teacher_features(model, family, images, batch_size=16)
    return model, family, images, targets


@pytest.mark.parametrize("optimizer,lr", [("adamw", 1e-3), ("sgd", 1e-3)])
def test_adaptor_training_lowers_the_error(setup, optimizer, lr):
    model, family, images, targets = setup
    block = family.candidates(model)[0]
    row = score_block(
        model,
        family,
        block,
        images,
        targets,
        config=ScanConfig(iterations=20, batch_size=16, lr=lr, optimizer=optimizer),
    )
    assert row.trained and row.recoverability < row.initial_error


def test_training_that_raises_the_error_keeps_identity_and_the_table_says_so(setup):
    from hf_practise.result import CompressionResult

    model, family, images, targets = setup
    block = family.candidates(model)[0]
    row = score_block(
        model, family, block, images, targets, config=ScanConfig(iterations=3, batch_size=16, lr=0.05, optimizer="sgd")
    )
    assert not row.trained and row.recoverability == row.initial_error
    table = CompressionResult.scan_table(type("R", (), {"scan": [row], "dropped": []})())
    assert "(identity kept)" in table and "on 1 of 1 candidates" in table


def test_an_unknown_scan_optimizer_is_refused():
    with pytest.raises(ValueError, match="scan.optimizer"):
        ScanConfig(optimizer="lion")
