"""Quantization-aware recovery: the compressed model finetuned once more under int8 fake quantization, on the tiny
set, so that one set of images recovers both the dropped blocks and the int8 error.

NNCF quantizes the PyTorch model (`nncf.quantize`: fake quantizers on the weights and activations, their ranges
calibrated on the tiny set, and trainable); the model then mimics the fp32 teacher's pre-pooling features (MSE,
classifier frozen, as the fp32 finetune does) through those quantizers, and OpenVINO converts it to an int8 IR
(`ov.convert_model`: the fake quantizers become its int8 kernels). NNCF's torch quantizers export to ONNX only as
its own `FakeQuantize` op, which ONNX Runtime does not run, so this path is OpenVINO's. The fp32 model stays the
native, reloadable checkpoint; only the int8 artifact comes from here.

Needs `pip install "hf-practise[openvino]"` (OpenVINO, NNCF; NNCF compiles its CPU kernels once, with the
machine's C++ compiler).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from .backbones.base import BackboneFamily
from .quantize import OPENVINO_BIN, OPENVINO_XML, Int8Model, _logits, _split, checked_int8, require_int8_backend
from .training import cosine_schedule

logger = logging.getLogger(__name__)

__all__ = ["quantize_aware"]

#: the one runtime whose converter turns NNCF's torch fake quantizers into int8 kernels
QAT_BACKEND = "openvino"
#: how long NNCF may take to compile and load its CPU kernels the first time (`NNCF_EXTENSION_LOAD_TIMEOUT`, seconds)
NNCF_BUILD_TIMEOUT_S = 900


def _hooked_features(model: nn.Module, family: BackboneFamily, images: torch.Tensor) -> torch.Tensor:
    """The pre-pooling features of an NNCF-quantized model, with its fake quantizers applied: NNCF runs its hooks
    only inside the model's own `forward`, so the features are computed under the same hook mode it enters there."""
    from nncf.torch.function_hook.hook_executor_mode import FunctionHookMode
    from nncf.torch.function_hook.wrapper import get_hook_storage

    with FunctionHookMode(model=model, hook_storage=get_hook_storage(model)) as ctx:
        (images,), _ = ctx.process_model_inputs((images,), {})
        return family.forward_features(model, images)


def _nncf_quantize(model: nn.Module, images: torch.Tensor, batch_size: int, *, transformer: bool) -> nn.Module:
    import nncf

    batches = list(images.split(batch_size))
    with contextlib.redirect_stdout(io.StringIO()):  # NNCF draws progress bars
        return nncf.quantize(
            model,
            nncf.Dataset(batches),
            subset_size=len(batches),  # NNCF counts the dataset's items: batches
            preset=nncf.QuantizationPreset.PERFORMANCE,
            model_type=nncf.ModelType.TRANSFORMER if transformer else None,
        )


def _train(
    model: nn.Module,
    family: BackboneFamily,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> list[float]:
    """`steps` AdamW steps (cosine decay) of feature MSE through the fake quantizers; the classifier is frozen and
    normalisation statistics stay as they are (eval mode)."""
    classifier = {id(p) for p in family.classifier(model).parameters()}
    params = [p for p in model.parameters() if id(p) not in classifier and p.is_floating_point()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = cosine_schedule(optimizer, iterations=steps)
    g = torch.Generator().manual_seed(seed)
    losses, order = [], torch.empty(0, dtype=torch.long)
    bs = min(batch_size, len(images))
    for step in range(steps):
        if len(order) < bs:
            order = torch.cat([order, torch.randperm(len(images), generator=g)])
        idx, order = order[:bs], order[bs:]
        loss = nn.functional.mse_loss(_hooked_features(model, family, images[idx]), targets[idx])
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"Quantization-aware training diverged at step {step}: lower the rate (`quantize_aware_lr`, now {lr:g})."
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    for p in params:
        p.requires_grad_(False)
    return losses


def quantize_aware(
    student: nn.Module,
    teacher: nn.Module,
    family: BackboneFamily,
    images: torch.Tensor,
    *,
    steps: int,
    lr: float = 1e-5,
    batch_size: int = 64,
    holdout: int | float = 0.25,
    threads: int | None = None,
    seed: int = 0,
) -> Int8Model:
    """`student` quantized to int8 for OpenVINO by NNCF, its fake quantizers and weights trained for `steps` steps
    to mimic `teacher`'s features on the tiny-set `images` (a held-out part checks the result, as in
    `quantize.quantize_int8`); `student` itself is left as it is.

    Raises:
        ImportError: OpenVINO or NNCF is not installed (checked before any work), naming the install command.
        ValueError: `steps` is not positive, or `holdout` leaves no image to train on.
    """
    require_int8_backend(QAT_BACKEND)
    # NNCF compiles its CPU kernels on first use and gives up after 60 s by default, which a busy 2-core machine
    # exceeds (measured: 3 min beside two training jobs); a value the user set wins
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", str(NNCF_BUILD_TIMEOUT_S))
    if steps < 1:
        raise ValueError(f"quantization-aware training needs at least one step; got steps={steps}.")
    import openvino as ov

    images = images.detach().float().cpu()
    train, check = _split(images, holdout, seed, needs_holdout=False)
    model = copy.deepcopy(student).cpu().eval()
    with torch.no_grad():
        targets = torch.cat([family.forward_features(teacher.eval(), x) for x in train.split(batch_size)])
        reference = torch.cat([family.forward_head(model, family.forward_features(model, x)) for x in check.split(64)])
    # a pre-norm residual stream stays float, as in the post-training path
    transformer = any(isinstance(m, nn.LayerNorm) for m in model.modules())
    quantized = _nncf_quantize(model, train, batch_size, transformer=transformer)
    losses = _train(quantized, family, train, targets, steps=steps, lr=lr, batch_size=batch_size, seed=seed)
    with tempfile.TemporaryDirectory(prefix="hf_practise_qat_") as tmp:
        converted = ov.convert_model(quantized, example_input=train[:1])
        converted.reshape({converted.input(0): ov.PartialShape([-1, *train.shape[1:]])})  # any batch
        ov.save_model(converted, Path(tmp) / OPENVINO_XML, compress_to_fp16=False)
        files = {name: (Path(tmp) / name).read_bytes() for name in (OPENVINO_XML, OPENVINO_BIN)}
    got = _logits(QAT_BACKEND, files, check, threads or torch.get_num_threads())
    errors = {"quantization-aware": float(((got - reference) ** 2).mean())}
    calibration = f"quantization-aware ({steps} steps)"
    result = checked_int8(
        QAT_BACKEND, files, calibration, transformer, errors, got, reference, train.shape[0], check is images
    )
    logger.info(
        "int8 (quantization-aware, %d steps): feature loss %.4g -> %.4g; top-1 agreement with fp32 %.1f%% on %d %s "
        "images",
        steps,
        losses[0],
        losses[-1],
        100 * result.agreement,
        result.check_images,
        result.checked_on,
    )
    return result
