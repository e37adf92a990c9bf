"""timm models loaded through transformers (`TimmWrapperForImageClassification`).

The wrapper holds a timm model at `timm_model`; this family hands every structural question to the timm family
of that model (its stages, candidates, adaptor sites, features and head), so whatever timm model the wrapper
holds compresses as it would on its own. Saving writes a TimmWrapper checkpoint: the timm family's depth
arguments go into the wrapper config's `model_args`, so `AutoModelForImageClassification.from_pretrained`
rebuilds the shallower model. Where the timm family cannot rebuild from `model_args` (EfficientNet, RegNet,
...), the checkpoint is in hf_practise's format and reloads with `hf_practise.load_compressed`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import BackboneFamily
from .registry import register_family
from .tiny import NUM_CLASSES, calibrate_norms, fan_in_init
from .transformers_common import TransformersFamily


def _tiny_wrapper(architecture: str, **model_args: Any):
    def build(seed: int = 0) -> nn.Module:
        import transformers

        torch.manual_seed(seed)
        config = transformers.TimmWrapperConfig(
            architecture=architecture, model_args=model_args, num_labels=NUM_CLASSES
        )
        return calibrate_norms(fan_in_init(transformers.TimmWrapperForImageClassification(config), seed), seed)

    return build


@register_family
class TransformersTimmWrapperFamily(TransformersFamily):
    name = "transformers-timm-wrapper"
    model_class_name = "TimmWrapperForImageClassification"
    base_attr = "timm_model"
    tiny_models = {
        "timm-resnet": _tiny_wrapper("resnet18", layers=[2, 1, 2, 1], stem_width=8),
        "timm-vit": _tiny_wrapper(
            "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=3, embed_dim=32, num_heads=2
        ),
        "timm-mobilenetv2-loader": _tiny_wrapper("mobilenetv2_035"),
    }

    def __init__(self, inner: BackboneFamily | None = None) -> None:
        self._bound = inner
        if inner is not None:  # what callers read off the family itself
            self.min_blocks_per_stage = inner.min_blocks_per_stage
            self.finetune_optimizer = inner.finetune_optimizer

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        if not super().matches(model):
            return False
        from .registry import registered_families

        return any(f.library_name == "timm" and f.matches(model.timm_model) for f in registered_families())

    @classmethod
    def for_model(cls, model: nn.Module) -> BackboneFamily:
        return cls(cls._timm_family(model))

    @staticmethod
    def _timm_family(model: nn.Module) -> BackboneFamily:
        from .registry import get_family

        return get_family(model.timm_model)

    def inner(self, model: nn.Module) -> BackboneFamily:
        return self._bound or self._timm_family(model)

    def _block_family(self) -> BackboneFamily:
        if self._bound is None:
            raise ValueError("This adapter is not bound to a model; get it with `hf_practise.get_family(model)`.")
        return self._bound

    # ---- structure: the wrapped model's, through its timm family ----------------------------------------
    def stages(self, model: nn.Module):
        return self.inner(model).stages(model.timm_model)

    def is_droppable(self, block: nn.Module) -> bool:
        return self._block_family().is_droppable(block)

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return self._block_family().branch_outputs(block)

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return self._block_family().branch_inputs(block)

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return self.inner(model).stage_entry_outputs(model.timm_model, stage)

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return self.inner(model).stage_exit_inputs(model.timm_model, stage)

    def remove_blocks(self, model: nn.Module, gone: set[tuple[int, int]]) -> None:
        self.inner(model).remove_blocks(model.timm_model, gone)

    # ---- forward ------------------------------------------------------------------------------------------
    def forward_features(self, model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.inner(model).forward_features(model.timm_model, pixel_values)

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return self.inner(model).forward_head(model.timm_model, features)

    def classifier(self, model: nn.Module) -> nn.Module:
        return self.inner(model).classifier(model.timm_model)

    def data_config(self, model: nn.Module) -> dict[str, Any]:
        return self.inner(model).data_config(model.timm_model)

    # ---- saving -------------------------------------------------------------------------------------------
    def reloads_natively(self, model: nn.Module) -> bool:
        from .base import REMOVED_ATTR

        # the removal is recorded on the wrapper; the timm family judges the wrapped model with it
        inner_model = model.timm_model
        object.__setattr__(inner_model, REMOVED_ATTR, getattr(model, REMOVED_ATTR, []))
        return self.inner(model).reloads_natively(inner_model)

    def why_not_native(self, model: nn.Module) -> str:
        if self.reloads_natively(model):  # (records the removal on the wrapped model)
            return ""
        return self.inner(model).why_not_native(model.timm_model)

    def pruned_config(self, model: nn.Module):
        config = model.config
        d = config.to_dict()
        d["model_args"] = {**(d.get("model_args") or {}), **self.inner(model).block_args(model.timm_model)}
        new = type(config).from_dict(d)
        new._attn_implementation = getattr(config, "_attn_implementation", None)
        return new
