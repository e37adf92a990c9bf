"""The benchmark teachers: small classifiers of each family that the benchmarks train on Fashion-MNIST (32x32 RGB,
10 classes), by recipe name.

A recipe is what the teacher is (for the results tables) and how to build it (the library's own random init).
`benchmarks/train_teacher.py NAME` trains one, and a committed teacher (`teachers/NAME/teacher_metrics.json`)
records the recipe name it was trained with, so a name, once committed, keeps its recipe.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["BY_FAMILY", "RECIPES", "TeacherRecipe", "timm_teacher", "transformers_teacher"]

NUM_CLASSES = 10  # Fashion-MNIST's

#: (description, builder) of a teacher
TeacherRecipe = tuple[str, Callable[[], nn.Module]]


def timm_teacher(description: str, arch: str, **kwargs) -> TeacherRecipe:
    """A recipe of `timm.create_model(arch, **kwargs)`, randomly initialised, with 10 classes."""

    def build() -> nn.Module:
        import timm

        return timm.create_model(arch, pretrained=False, num_classes=NUM_CLASSES, **kwargs)

    return description, build


def transformers_teacher(description: str, model_class: str, config_class: str, **kwargs) -> TeacherRecipe:
    """A recipe of a transformers `model_class(config_class(**kwargs))`, randomly initialised, with 10 labels."""

    def build() -> nn.Module:
        import transformers

        return getattr(transformers, model_class)(getattr(transformers, config_class)(num_labels=NUM_CLASSES, **kwargs))

    return description, build


#: family name (`BackboneFamily.name`) -> its teachers: recipe name -> recipe
BY_FAMILY: dict[str, dict[str, TeacherRecipe]] = {
    "timm-resnet": {
        # a Bottleneck ResNet-50 (depths 3-4-6-3, 12 candidates) at half width: 1x1 adaptors up to 1,024 channels
        # wide, at a quarter of the full network's cost (the shared resnet34 teacher has BasicBlocks only)
        "timm-resnet50": timm_teacher(
            "timm ResNet-50 (Bottleneck, widths 32-256, depths 3-4-6-3)", "resnet50", channels=(32, 64, 128, 256)
        )
    },
    "timm-efficientnet": {
        "timm-mobilenetv2": timm_teacher("timm MobileNetV2 (width 1.0, 17 blocks)", "mobilenetv2_100"),
    },
    "timm-regnet": {"timm-regnetx": timm_teacher("timm RegNetX-200MF (depths 1-1-4-7)", "regnetx_002")},
    "timm-convnext": {
        "timm-convnext": timm_teacher(
            "timm ConvNeXt (widths 32-256, depths 2-2-6-2)",
            "convnext_atto",
            dims=(32, 64, 128, 256),
            depths=(2, 2, 6, 2),
        ),
    },
    "timm-vit": {
        "timm-vit": timm_teacher(
            "timm ViT (dim 64, 8 blocks, patch 4)",
            "vit_tiny_patch16_224",
            img_size=32,
            patch_size=4,
            embed_dim=64,
            depth=8,
            num_heads=2,
        ),
    },
    "timm-swin": {
        "timm-swin": timm_teacher(
            "timm Swin (dim 48, depths 2-6-2, patch 4, window 4)",
            "swin_tiny_patch4_window7_224",
            img_size=32,
            patch_size=4,
            window_size=4,
            embed_dim=48,
            depths=(2, 6, 2),
            num_heads=(2, 4, 8),
        ),
    },
    "timm-repvit": {
        # re-parameterisable: trained (and compressed) in the train form that timm.create_model gives
        "timm-repvit": timm_teacher(
            "timm RepViT (widths 32-256, depths 2-2-8-2)",
            "repvit_m0_9",
            embed_dim=(32, 64, 128, 256),
            depth=(2, 2, 8, 2),
        ),
    },
    "timm-fastvit": {
        # a conv-attention hybrid: RepMixer stages, self-attention in the last
        "timm-fastvit": timm_teacher(
            "timm FastViT-SA (widths 32-256, depths 2-2-4-2)",
            "fastvit_sa12",
            layers=(2, 2, 4, 2),
            embed_dims=(32, 64, 128, 256),
        ),
    },
    "timm-mlp-mixer": {
        # timm's MLP-only nets fix their patch size and width in the entry point: at 32x32, 4 tokens of 16x16
        "timm-gmlp": timm_teacher("timm gMLP-Ti (30 blocks, patch 16: 4 tokens)", "gmlp_ti16_224", img_size=32),
    },
    "transformers-resnet": {
        "hf-resnet": transformers_teacher(
            "transformers ResNet (basic, widths 32-256, depths 2-2-4-2)",
            "ResNetForImageClassification",
            "ResNetConfig",
            embedding_size=32,
            hidden_sizes=[32, 64, 128, 256],
            depths=[2, 2, 4, 2],
            layer_type="basic",
        ),
    },
    "transformers-convnext": {
        "hf-convnext": transformers_teacher(
            "transformers ConvNeXt (widths 32-256, depths 2-2-6-2)",
            "ConvNextForImageClassification",
            "ConvNextConfig",
            hidden_sizes=[32, 64, 128, 256],
            depths=[2, 2, 6, 2],
        ),
    },
    "transformers-vit": {
        "hf-vit": transformers_teacher(
            "transformers ViT (hidden 64, 8 layers, patch 4)",
            "ViTForImageClassification",
            "ViTConfig",
            hidden_size=64,
            num_hidden_layers=8,
            num_attention_heads=2,
            intermediate_size=256,
            image_size=32,
            patch_size=4,
        ),
    },
}
#: recipe name -> recipe, every family's
RECIPES: dict[str, TeacherRecipe] = {name: recipe for recipes in BY_FAMILY.values() for name, recipe in recipes.items()}
