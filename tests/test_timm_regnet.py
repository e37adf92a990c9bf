"""timm RegNet specifics: which drops plain timm rebuilds (the last stage's blocks only, from `depth`), and that
either save reloads with identical logits.

The invariants every family shares (shapes, reload) are in test_family_invariants.py.
"""

from __future__ import annotations

import json

import pytest
import torch

from hf_practise import get_family, load_compressed
from hf_practise.files import save_directory_atomically
from hf_practise.recoverability import build_pruned

from .tiny_models import tiny_model


@pytest.mark.parametrize(
    ("paths", "native"),
    [(["s4.b3"], True), (["s4.b2", "s4.b7"], True), (["s3.b2"], False), (["s3.b4", "s4.b5"], False)],
)
def test_only_last_stage_drops_reload_with_plain_timm(tmp_path, paths, native):
    """timm derives a RegNet's stage depths from one line of widths: a lower `depth` shortens the last stage and
    nothing else, so blocks of the last stage, wherever in it, are the one drop plain timm rebuilds (the kept
    blocks renamed b1, b2, ... as timm names them); any other drop reloads with `load_compressed`."""
    import timm

    model = tiny_model("timm-regnet/regnetx")  # regnetx_002, depths 1-1-4-7
    with torch.no_grad():  # timm zeroes each block's last BatchNorm: a dropped block would change nothing
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(0))
    family = get_family(model)
    holes = [r for r in family.candidates(model) if r.path in paths]
    pruned = build_pruned(model, family, holes, adaptors=False).eval()
    assert family.reloads_natively(pruned) is native
    assert (family.why_not_native(pruned) == "") is native
    folder = save_directory_atomically(
        tmp_path / "saved", lambda d: family.save_pretrained(pruned, d, source_config={})
    )
    config = json.loads((folder / "config.json").read_text())
    assert ("hf_practise" not in config) is native
    if native:
        assert config["model_args"]["depth"] == 13 - len(paths)
    assert [name for name, _ in pruned.s4.named_children()][:2] == ["b1", "b3" if "s4.b2" in paths else "b2"]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    reload = timm.create_model(f"local-dir:{folder}", pretrained=True) if native else load_compressed(folder)
    with torch.no_grad():
        torch.testing.assert_close(reload.eval()(x), pruned(x), rtol=0, atol=0)
        assert not torch.allclose(pruned(x), model(x))  # the blocks did something
