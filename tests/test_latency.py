"""Latency and cost measurement: fields, alternation, exact MAC counts."""

from __future__ import annotations

import torch
from torch import nn

from hf_practise import LatencyConfig, compare_latency, count_macs, count_params, get_family, measure_latency
from hf_practise.latency import block_latency_table

from .conftest import tiny_resnet

FAST = LatencyConfig(batch_size=2, warmup=1, repeats=5, threads=1)


def test_measure_latency_reports_its_setup():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        stats = measure_latency(model, input_size=(3, 16, 16), config=FAST)  # times with 1 thread
        assert torch.get_num_threads() == 2  # and puts the caller's setting back
    finally:
        torch.set_num_threads(before)
    assert stats.median_ms > 0 and stats.p25_ms <= stats.median_ms <= stats.p75_ms
    assert (stats.batch_size, stats.threads, stats.repeats, stats.input_size) == (2, 1, 5, (3, 16, 16))
    assert stats.device == "cpu" and stats.dtype == "float32" and stats.torch_version == torch.__version__


def test_comparing_a_model_with_a_much_bigger_one():
    small = nn.Conv2d(3, 4, 1)
    big = nn.Sequential(*[nn.Conv2d(3, 3, 3, padding=1) for _ in range(30)])
    cmp = compare_latency(big, small, input_size=(3, 32, 32), config=FAST)
    assert cmp.reduction > 0.5 and cmp.base.repeats == cmp.candidate.repeats == 5


def test_macs_are_exact_for_a_conv():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_macs(conv, input_size=(3, 10, 10)) == 3 * 8 * 9 * 10 * 10
    assert count_params(conv) == 3 * 8 * 9


def test_block_shares_are_fractions_of_the_whole():
    model = tiny_resnet("resnet26")
    family = get_family(model)
    shares, whole = block_latency_table(model, family, family.candidates(model), input_size=(3, 32, 32), config=FAST)
    assert set(shares) == {c.path for c in family.candidates(model)}
    assert all(0 < v < 1 for v in shares.values()) and sum(shares.values()) < 1.5
    assert whole.median_ms > 0
