"""Adaptors: placement, identity at init, exact folding, several holes at once."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hf_practise import fold_adaptors, get_family, insert_adaptors
from hf_practise.adaptors import AdaptedLayer, adaptor_parameters, adaptor_state, load_adaptor_state
from hf_practise.recoverability import build_pruned


def perturb_adaptors(model: nn.Module, scale: float = 0.2, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adaptor_parameters(model):
            p.add_(scale * torch.randn(p.shape, generator=g))


def test_identity_adaptors_leave_outputs_unchanged(model, images):
    family = get_family(model)
    with torch.no_grad():
        before = model(images)
        insert_adaptors(model, family.adaptor_sites(model, family.candidates(model)))
        after = model(images)
    assert any(isinstance(m, AdaptedLayer) for m in model.modules())
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("how_many", [1, 2, "all"])
def test_folding_is_exact(model, images, how_many):
    family = get_family(model)
    cands = family.candidates(model)
    dropped = cands if how_many == "all" else cands[-how_many:] if how_many == 1 else [cands[0], cands[-1]]
    student = build_pruned(model, family, dropped)
    perturb_adaptors(student)
    count = len(adaptor_state(student))
    with torch.no_grad():
        adapted = student(images)
        n = fold_adaptors(student)
        folded = student(images)
    assert n == count > 0
    assert not any(isinstance(m, AdaptedLayer) for m in student.modules())
    rel = (folded - adapted).norm() / adapted.norm()
    assert rel < 1e-4, rel
    # only the original layer types remain
    assert {type(m) for m in student.modules()} <= {type(m) for m in model.modules()}


def test_sites_match_the_paper_for_a_middle_block(model):
    """A hole in stage s: post after earlier branches' last convs (and the stage's downsample conv);
    pre before later blocks' first convs and the next stage's first block (conv1 and downsample)."""
    family = get_family(model)
    stages = family.stages(model)
    s = 2
    ref = next(c for c in family.candidates(model) if c.stage == s)
    sites = family.adaptor_sites(model, [ref])
    post = {id(site.module) for site in sites if site.side == "post"}
    pre = {id(site.module) for site in sites if site.side == "pre"}
    opener = stages[s][0]
    assert id(family.branch_outputs(opener)[0]) in post
    shortcut = [m for m in opener.downsample.modules() if isinstance(m, nn.Conv2d)][-1]
    assert id(shortcut) in post
    for block in list(stages[s])[ref.index + 1 :]:
        assert id(block.conv1) in pre
    nxt = stages[s + 1][0]
    nxt_short = [m for m in nxt.downsample.modules() if isinstance(m, nn.Conv2d)][-1]
    assert id(nxt.conv1) in pre and id(nxt_short) in pre
    dropped = family.resolve(model, ref)
    inside = {id(m) for m in dropped.modules()}
    assert not (pre | post) & inside


def test_last_stage_hole_has_only_post_adaptors(model):
    family = get_family(model)
    ref = [c for c in family.candidates(model) if c.stage == len(family.stages(model)) - 1][-1]
    sites = family.adaptor_sites(model, [ref])
    assert sites and all(site.side == "post" for site in sites)


def test_shared_sites_are_averaged_from_saved_states(model):
    family = get_family(model)
    cands = [c for c in family.candidates(model) if c.stage == 2]
    assert cands
    a = build_pruned(model, family, cands[:1])
    perturb_adaptors(a, seed=1)
    b = build_pruned(model, family, cands[:1])
    perturb_adaptors(b, seed=2)
    sa, sb = adaptor_state(a), adaptor_state(b)
    c = build_pruned(model, family, cands[:1])
    assert load_adaptor_state(c, [sa, sb]) == len(sa)
    for key, value in adaptor_state(c).items():
        torch.testing.assert_close(value, (sa[key] + sb[key]) / 2)


def test_pre_adaptor_refuses_grouped_conv():
    from hf_practise.adaptors import make_adaptor

    with pytest.raises(ValueError, match="grouped"):
        make_adaptor(nn.Conv2d(4, 4, 3, groups=2), "pre")
    with pytest.raises(TypeError, match="nn.Conv2d or nn.Linear"):
        make_adaptor(nn.BatchNorm2d(4), "post")


def test_linear_adaptors_fold_exactly():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4))
    from hf_practise.backbones.base import AdaptorSite

    insert_adaptors(
        net, [AdaptorSite(net[0], "post", "0"), AdaptorSite(net[2], "pre", "2"), AdaptorSite(net[2], "post", "2")]
    )
    perturb_adaptors(net)
    x = torch.randn(3, 6)
    with torch.no_grad():
        y = net(x)
        fold_adaptors(net)
        torch.testing.assert_close(net(x), y, rtol=1e-5, atol=1e-5)
    assert [type(m) for m in net] == [nn.Linear, nn.ReLU, nn.Linear]


def test_adaptors_can_be_removed_without_folding(model, images):
    from hf_practise.adaptors import remove_adaptors

    family = get_family(model)
    with torch.no_grad():
        before = model(images)
        sites = family.adaptor_sites(model, family.candidates(model)[-1:])
        insert_adaptors(model, sites)
        perturb_adaptors(model)
        assert not torch.allclose(model(images), before)
        assert remove_adaptors(model) == len(sites)
        torch.testing.assert_close(model(images), before, rtol=0, atol=0)
    assert not any(isinstance(m, AdaptedLayer) for m in model.modules())
