"""timm Next-ViT specifics: the family's stages are the runs of blocks on one stream (a timm stage holds several),
where the adaptors go, native depths where timm's block layout allows them, and hf_practise's format where not.

The invariants every family shares (exact folding, shapes, native reload) are in test_family_invariants.py.
"""

from __future__ import annotations

import json

import pytest
import torch

from hf_practise import get_family, load_compressed
from hf_practise.files import save_directory_atomically
from hf_practise.recoverability import build_pruned

from .tiny_models import logits, tiny_model


def test_runs_candidates_and_adaptor_sites():
    model = tiny_model("timm-nextvit/nextvit")  # depths 2-3-5-3
    family = get_family(model)
    # each transformer block, and each stage's first block, opens a run on a new stream
    assert [len(run) for run in family.stages(model)] == [2, 2, 1, 4, 1, 2, 1]
    assert [r.path for r in family.candidates(model)] == [
        "stages.0.blocks.1",
        "stages.1.blocks.1",
        "stages.2.blocks.1",
        "stages.2.blocks.2",
        "stages.2.blocks.3",
        "stages.3.blocks.1",
    ]
    hole = family.candidates(model)[3]
    assert {(s.key, s.side) for s in family.adaptor_sites(model, [hole])} == {
        ("stages.2.blocks.0.patch_embed.conv", "post"),  # the run's first block maps its input to the stream
        ("stages.2.blocks.0.mhca.projection", "post"),
        ("stages.2.blocks.0.mlp.fc2", "post"),
        ("stages.2.blocks.1.mhca.projection", "post"),
        ("stages.2.blocks.1.mlp.fc2", "post"),
        ("stages.2.blocks.3.mlp.fc1", "pre"),  # (its conv attention reads through a grouped conv)
        ("stages.2.blocks.4.e_mhsa.q", "pre"),  # the transformer block that ends the run
        ("stages.2.blocks.4.e_mhsa.k", "pre"),
        ("stages.2.blocks.4.e_mhsa.v", "pre"),
    }


def test_a_third_stage_drop_is_saved_for_the_loader(tmp_path):
    import timm

    model = tiny_model("timm-nextvit/nextvit")
    family = get_family(model)
    hole = family.candidates(model)[2]  # stages.2.blocks.1: the stage no longer holds the pattern timm lays out
    pruned = build_pruned(model, family, [hole], adaptors=False).eval()
    assert family.block_args(pruned) == {"depths": [2, 3, 4, 3]} and not family.reloads_natively(pruned)
    folder = save_directory_atomically(
        tmp_path / "saved", lambda d: family.save_pretrained(pruned, d, source_config={})
    )
    assert json.loads((folder / "config.json").read_text())["hf_practise"]["removed_blocks"] == [
        [[3, 1, "stages.2.blocks.1"]]  # run 3: block 1 of the run opened by timm's stage 2 first block
    ]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(logits(load_compressed(folder), x), logits(pruned, x), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="Missing key"):  # plain timm builds the original and says so
        timm.create_model(f"local-dir:{folder}", pretrained=True)


@pytest.mark.parametrize("arch", ["nextvit_small", "nextvit_base", "nextvit_large"])
def test_every_entry_point_takes_the_depths_of_a_drop_outside_the_third_stage(arch):
    """Built on the meta device: no weights."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(arch, num_classes=5)
    family = get_family(model)
    runs = family.stages(model)
    outside = [r for r in family.candidates(model) if not r.path.startswith("stages.2.")]
    assert [r.path for r in outside] == ["stages.0.blocks.1", "stages.0.blocks.2", "stages.1.blocks.1"] + [
        "stages.1.blocks.2",
        "stages.3.blocks.1",
    ]
    assert len(family.candidates(model)) == len(outside) + 3 * (len(model.stages[2].blocks) // 5), arch
    family.drop_blocks(model, outside[::2])
    assert family.reloads_natively(model), arch
    with torch.device("meta"):
        rebuilt = timm.create_model(arch, num_classes=5, **family.block_args(model))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert len(runs) == 7 + 2 * (len(model.stages[2].blocks) // 5 - 1), arch
