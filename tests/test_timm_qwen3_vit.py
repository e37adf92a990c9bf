"""timm Qwen3 ViT specifics: classifiers and encoders found in their encoder's blocks, an encoder's head is its VLM
projector (an encoder without one is refused), and native depths on every entry point.

The invariants every family shares (exact folding, shapes, native reload) are in test_family_invariants.py.
"""

from __future__ import annotations

import torch

from hf_practise import get_family

from .tiny_models import assert_native_rebuild, dropped, pretrained_meta, tiny_model


def test_an_encoder_head_is_its_projector():
    import timm

    model = tiny_model("timm-qwen3-vit-encoder/qwen3-vit-enc")
    family = get_family(model)
    assert family.classifier(model) is model.merger
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert family.forward_head(model, family.forward_features(model, x)).shape == model(x).shape == (2, 4, 1024)
    with torch.device("meta"):
        pooled = timm.create_model("qwen3_vit_88m_enc", global_pool="avg", depth=2)
    assert not type(family).matches(pooled)  # no projector: nothing to keep as its head


def test_every_entry_point_takes_the_depth_of_a_dropped_model():
    """The entry points let `depth` from `model_args` override theirs (built on the meta device: no weights)."""
    for arch, model in pretrained_meta("qwen3_vit").items():
        name = "timm-qwen3-vit-encoder" if arch.endswith("_enc") else "timm-qwen3-vit"
        family = dropped(arch, model, name, slice(3, 5))
        assert family.stages(model)[0] is getattr(model, "encoder", model).blocks, arch
        assert_native_rebuild(arch, family, model)
