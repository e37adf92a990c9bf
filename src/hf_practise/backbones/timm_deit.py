"""timm DeiT with distillation (`VisionTransformerDistilled`): a ViT (see `timm_vit`) with a distillation token
and a second head; in eval the two heads' logits are averaged. Both heads stay frozen during the mimic
finetune. Plain timm reloads the result with `model_args={"depth": n}`.
"""

from __future__ import annotations

from torch import nn

from .registry import register_family
from .timm_vit import TimmViTFamily, timm_vit_tiny


@register_family
class TimmDeiTDistilledFamily(TimmViTFamily):
    name = "timm-deit-distilled"
    tiny_models = {"deit-distilled": timm_vit_tiny("deit_tiny_distilled_patch16_224")}
    model_class = "timm.models.deit:VisionTransformerDistilled"

    def classifier(self, model: nn.Module) -> nn.Module:
        return nn.ModuleList([model.head, model.head_dist])
