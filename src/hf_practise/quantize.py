"""Post-training int8 quantization of a model, calibrated on the tiny set, with the runtimes' own quantizers.

The fp32 model is exported to ONNX (`runtimes.export_onnx_bytes`) and quantized by ONNX Runtime's static QDQ
quantizer or by NNCF for OpenVINO, with the tiny-set images as calibration data (no labels). Part of the tiny set
is held out: each calibration method is scored there by its logit error against the fp32 model, `"auto"` keeps
the best one, and the top-1 agreement with fp32 is measured there, on images the calibration never saw.

Needs `pip install "hf-practise[onnx]"` (ONNX Runtime) or `pip install "hf-practise[openvino]"` (OpenVINO, NNCF).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import math
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .runtimes import Runner, _numpy, _onnxruntime_runner, _openvino_runner, export_onnx_bytes, require_backend
from .training import as_logits

logger = logging.getLogger(__name__)

__all__ = ["INT8_BACKENDS", "METHODS", "Int8Model", "quantize_int8", "require_int8_backend"]

#: the runtimes that run int8 models (PyTorch eager has no int8 CPU path here)
INT8_BACKENDS = ("onnxruntime", "openvino")
#: calibration methods per backend, in the order `"auto"` tries them (a tie keeps the earlier one)
METHODS = {
    # onnxruntime.quantization.CalibrationMethod
    "onnxruntime": ("minmax", "entropy", "percentile"),
    # nncf.QuantizationPreset: symmetric / asymmetric activations
    "openvino": ("performance", "mixed"),
}
ONNX_INT8_FILE = "model.int8.onnx"
OPENVINO_XML = "openvino_model.xml"
OPENVINO_BIN = "openvino_model.bin"
#: most images per calibration batch (NNCF averages its ranges over batches: one image per batch clipped a tiny
#: ResNet's activations to 9x the logit error of 18-image batches) and per checking run
BATCH = 32
#: op types that move or reshape tensors without arithmetic: left out of `float_ops`
_MOVEMENT = frozenset(
    {
        "Broadcast", "Cast", "Concat", "Constant", "Convert", "Expand", "Flatten", "Gather", "Identity", "Parameter",
        "Reshape", "Result", "Shape", "ShapeOf", "Slice", "Split", "Squeeze", "StridedSlice", "Transpose",
        "Unsqueeze", "VariadicSplit",
    }
)  # fmt: skip
_FLOAT_PRECISIONS = frozenset({"f32", "f16", "bf16", "f64"})
#: the ONNX input and output names, those of `publish.export_onnx` (the calibration data feeds `pixel_values`)
_NAMES = {"input_names": ["pixel_values"], "output_names": ["logits"]}


@dataclass
class Int8Model:
    """An int8 model in its runtime's own format, with what its calibration measured against the fp32 model.

    Attributes:
        backend: "onnxruntime" or "openvino".
        files: file name -> content: `model.int8.onnx` (QDQ ONNX), or `openvino_model.xml` + `.bin` (OpenVINO IR).
        calibration: the calibration method used (`METHODS[backend]`).
        float_stream: the model has a pre-norm residual stream (an `Add` read by a `LayerNormalization` and by
            another `Add`), kept float: left out of ONNX Runtime's quantization, NNCF's `ModelType.TRANSFORMER`.
        calibration_errors: each method tried -> mean squared logit difference from fp32 on the check images.
        agreement: share of the check images whose top-1 class is the fp32 model's.
        max_logit_error: largest |logit difference| from fp32 on the check images.
        float_ops: op types (in the runtime's naming) that still compute in float: left unquantized by the
            quantizer (ONNX Runtime) or run in float by the OpenVINO CPU plugin.
        calibration_images: images the ranges were calibrated on.
        check_images: images the errors and the agreement were measured on (the check images).
        checked_on: "held-out" (images the calibration never saw) or "calibration" (`holdout=0`).
        versions: package -> version of what quantized the model.
    """

    backend: str
    files: dict[str, bytes]
    calibration: str
    float_stream: bool
    calibration_errors: dict[str, float]
    agreement: float
    max_logit_error: float
    float_ops: list[str]
    calibration_images: int
    check_images: int
    checked_on: str
    versions: dict[str, str] = field(default_factory=dict)

    def runner(self, inputs: torch.Tensor, threads: int = 1) -> Runner:
        """The int8 model bound to `inputs`, ready to run on the CPU with `threads` threads, configured like the
        runners `runtimes.make_runner` builds for latency."""
        return _runner(self.backend, self.files, inputs, threads)

    def logits(self, images: torch.Tensor, *, threads: int = 1) -> torch.Tensor:
        """The int8 model's logits for `images` (fp32, on the CPU)."""
        return _logits(self.backend, self.files, images, threads)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the file contents (their sizes instead), for reports and cards."""
        record = {k: v for k, v in self.__dict__.items() if k != "files"}
        return {**record, "files": {name: len(data) for name, data in self.files.items()}}


def quantize_int8(
    model: nn.Module,
    images: torch.Tensor,
    *,
    backend: str,
    calibration: str = "auto",
    holdout: int | float = 0.25,
    opset: int = 17,
    threads: int | None = None,
    seed: int = 0,
) -> Int8Model:
    """Quantize `model` to int8 (weights int8 per channel, activations uint8 per tensor) for `backend`,
    calibrated on the tiny-set `images`.

    ONNX Runtime: `quant_pre_process`, then `quantize_static` in QDQ format. OpenVINO: `nncf.quantize` on the model
    OpenVINO reads from the ONNX export, saved as IR with fp32 float weights. A pre-norm transformer's residual
    stream (the `Add`s, class-token `Concat` and data movement that feed its `LayerNormalization`s) stays float:
    ONNX Runtime leaves it and the `LayerNormalization`s unquantized, NNCF quantizes with
    `model_type=ModelType.TRANSFORMER`. One uint8 scale cannot hold the stream's outlier channels: on tiny timm and
    transformers ViTs, top-1 agreement with fp32 fell to 75-79% with the stream quantized, against 94-98% without.

    Args:
        model: a classifier whose output (or its `.logits`) is the logits; put in eval mode for the export and
            restored after.
        images: the tiny set, preprocessed as the model expects (N, C, H, W); no labels.
        backend: "onnxruntime" or "openvino".
        calibration: a method of `METHODS[backend]`, or "auto" to try each and keep the one with the lowest
            held-out logit error.
        holdout: images kept out of calibration to choose and check it: a count, or a share of `images`.
            0 calibrates on all images and checks on them too (not with "auto").
        opset: ONNX opset of the fp32 export (17 or more keeps a layer norm one `LayerNormalization` node).
        threads: CPU threads of the runs that check the model (default: torch's).
        seed: seeds the split into calibration and held-out images.

    Raises:
        ValueError: `backend` is not an int8 runtime, `calibration` not one of its methods, or `holdout` leaves no
            image to calibrate on (or none to choose on, with "auto").
        ImportError: the backend's extra is not installed (checked before any work), naming the install command.
        RuntimeError: the model could not be exported to ONNX.
    """
    require_int8_backend(backend)
    methods = _methods(backend, calibration)
    images = images.detach().float().cpu()
    calibrate, check = _split(images, holdout, seed, needs_holdout=calibration == "auto")
    threads = threads or torch.get_num_threads()
    fp32, reference = _export(model, images, check, opset)
    with tempfile.TemporaryDirectory(prefix="hf_practise_int8_") as tmp:
        prepared = _prepare(backend, fp32, Path(tmp))
        if prepared.stream:
            logger.info("int8: %d residual-stream nodes stay float (pre-norm transformer)", len(prepared.stream))
        errors, candidates = _each_method(backend, prepared, methods, calibrate, check, reference, threads, Path(tmp))
    chosen = min(methods, key=errors.__getitem__)
    files, got = candidates[chosen]
    result = checked_int8(
        backend, files, chosen, bool(prepared.stream), errors, got, reference, calibrate.shape[0], check is images
    )
    logger.info(
        "int8 (%s, %s): top-1 agreement with fp32 %.1f%% on %d %s images; float ops: %s",
        backend,
        chosen,
        100 * result.agreement,
        result.check_images,
        result.checked_on,
        ", ".join(result.float_ops) or "none",
    )
    return result


def checked_int8(
    backend: str,
    files: dict[str, bytes],
    calibration: str,
    float_stream: bool,
    errors: dict[str, float],
    got: torch.Tensor,
    reference: torch.Tensor,
    calibration_images: int,
    on_calibration: bool,
) -> Int8Model:
    """The `Int8Model` of `files`, with what its logits `got` on the check images say against the fp32 model's
    `reference` (`on_calibration`: the check images are the calibration images, `holdout=0`)."""
    return Int8Model(
        backend=backend,
        files=files,
        calibration=calibration,
        float_stream=float_stream,
        calibration_errors=errors,
        agreement=float((got.argmax(-1) == reference.argmax(-1)).float().mean()),
        max_logit_error=float((got - reference).abs().max()),
        float_ops=_float_ops(backend, files),
        calibration_images=int(calibration_images),
        check_images=int(got.shape[0]),
        checked_on="calibration" if on_calibration else "held-out",
        versions=_versions(backend),
    )


def _each_method(
    backend: str,
    prepared: Any,
    methods: tuple[str, ...],
    calibrate: torch.Tensor,
    check: torch.Tensor,
    reference: torch.Tensor,
    threads: int,
    tmp: Path,
) -> tuple[dict[str, float], dict[str, tuple[dict[str, bytes], torch.Tensor]]]:
    """Quantize with each calibration method; its logit MSE against fp32 on `check`, its files and logits."""
    quantize = _quantize_onnxruntime if backend == "onnxruntime" else _quantize_openvino
    errors, candidates = {}, {}
    for i, method in enumerate(methods, 1):
        files = quantize(prepared, calibrate, method, tmp)
        got = _logits(backend, files, check, threads)
        errors[method], candidates[method] = float(((got - reference) ** 2).mean()), (files, got)
        logger.info("int8 calibration %d/%d (%s): logit MSE %.4g vs fp32", i, len(methods), method, errors[method])
    return errors, candidates


def require_int8_backend(backend: str) -> None:
    """Fail fast, before any work, on a backend without an int8 path or a runtime that is not installed."""
    if backend not in INT8_BACKENDS:
        raise ValueError(
            f"int8 quantization runs in ONNX Runtime or OpenVINO, not {backend!r}: use backend='onnxruntime' or "
            "'openvino' (CLI: --latency-backend onnxruntime / --latency-backend openvino)."
        )
    require_backend(backend)
    if backend == "openvino":
        try:
            importlib.import_module("nncf")
        except ImportError as e:
            raise ImportError(
                'int8 quantization for OpenVINO needs `nncf`, which is not installed: pip install "hf-practise[openvino]"'
            ) from e


def _methods(backend: str, calibration: str) -> tuple[str, ...]:
    known = METHODS[backend]
    if calibration == "auto":
        return known
    if calibration not in known:
        raise ValueError(
            f"Unknown int8 calibration {calibration!r} for {backend}; choose 'auto' or one of {', '.join(known)}."
        )
    return (calibration,)


def _split(
    images: torch.Tensor, holdout: int | float, seed: int, *, needs_holdout: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(calibration images, check images): a seeded random split, or all images twice for `holdout=0`."""
    n = int(images.shape[0])
    count = round(holdout * n) if isinstance(holdout, float) else int(holdout)
    if not 0 <= count < n or (isinstance(holdout, float) and not 0 <= holdout < 1):
        raise ValueError(
            f"holdout={holdout!r} leaves no image to calibrate on ({n} images): hold out a share in [0, 1) or "
            "fewer images than the tiny set has."
        )
    if count == 0:
        if needs_holdout:
            raise ValueError(
                f"calibration='auto' chooses on held-out images, but holdout={holdout!r} holds none out of {n}: "
                "hold some out (e.g. holdout=0.25), or name the calibration method."
            )
        return images, images
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return images[order[count:]], images[order[:count]]


@torch.no_grad()
def _export(model: nn.Module, images: torch.Tensor, check: torch.Tensor, opset: int) -> tuple[bytes, torch.Tensor]:
    """(the fp32 ONNX export with a dynamic batch, the fp32 logits of `check`), in eval mode."""
    training = model.training
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        reference = torch.cat([as_logits(model(x.to(device))).float().cpu() for x in check.split(BATCH)])
        try:
            data = export_onnx_bytes(model, (images[:2].to(device),), dynamic_batch=True, opset=opset, **_NAMES)
        except RuntimeError as e:
            reasons = "; ".join(line.strip() for line in str(e).splitlines()[1:]) or str(e)
            raise RuntimeError(
                f"Could not export {type(model).__name__} to ONNX, so it cannot be quantized to int8 ({reasons}). "
                "Check the export alone with hf_practise.export_onnx_bytes(model, (images[:2],))."
            ) from e
    finally:
        model.train(training)
    return data, reference


@dataclass(frozen=True)
class _Prepared:
    """The fp32 model as the backend's quantizer reads it, and the nodes of its residual stream that stay float."""

    model: Path | bytes
    stream: list[str]


def _prepare(backend: str, fp32: bytes, tmp: Path) -> _Prepared:
    """ONNX Runtime: the fp32 model after `quant_pre_process` (a file in `tmp`); OpenVINO: the export itself."""
    import onnx

    if backend != "onnxruntime":
        return _Prepared(fp32, _residual_stream(onnx.load_from_string(fp32).graph))
    from onnxruntime.quantization.shape_inference import quant_pre_process

    (tmp / "model.onnx").write_bytes(fp32)
    # ORT's pre-processing writes scratch files (external data, `sym_shape_infer_temp.onnx`) to the current
    # directory: run it from `tmp`, so nothing is left beside the user's files
    with contextlib.chdir(tmp):
        try:
            quant_pre_process(tmp / "model.onnx", tmp / "model.pre.onnx")
        except Exception as e:  # noqa: BLE001 - ORT's symbolic shape inference gives up on some graphs (timm's Swin)
            logger.info("int8: symbolic shape inference failed (%s); pre-processing with ONNX shape inference only", e)
            quant_pre_process(tmp / "model.onnx", tmp / "model.pre.onnx", skip_symbolic_shape=True)
    return _Prepared(tmp / "model.pre.onnx", _residual_stream(onnx.load(tmp / "model.pre.onnx").graph))


def _residual_stream(graph: Any) -> list[str]:
    """Names of the nodes of an ONNX graph's pre-norm residual stream, empty when it has none.

    A pre-norm stream is recognised by an `Add` whose output reaches (through data movement only) both a
    `LayerNormalization` and another `Add`. The stream is then what feeds each `LayerNormalization`, walked back
    through `Add`s, `Concat`s (a class token joining the patches) and data movement, and those
    `LayerNormalization`s.
    """
    producer = {name: node for node in graph.node for name in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def reached(node: Any) -> set[str]:
        """Op types that read `node`'s outputs, through data movement."""
        found, todo = set(), list(node.output)
        while todo:
            for reader in consumers.get(todo.pop(), []):
                found.add(reader.op_type)
                if reader.op_type in _MOVEMENT:
                    todo += reader.output
        return found

    if not any(n.op_type == "Add" and {"Add", "LayerNormalization"} <= reached(n) for n in graph.node):
        return []
    norms = [n for n in graph.node if n.op_type == "LayerNormalization"]
    stream, todo = {}, [n.input[0] for n in norms]
    while todo:
        node = producer.get(todo.pop())
        if node is None or node.name in stream or node.op_type not in _MOVEMENT | {"Add", "Concat"}:
            continue
        stream[node.name] = node
        todo += node.input if node.op_type in ("Add", "Concat") else node.input[:1]
    return [n.name for n in norms] + list(stream)


def _even_batches(images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """`images` split in batches of one size, the largest that divides their number and is at most `BATCH`."""
    n = int(images.shape[0])
    return images.split(max(d for d in range(1, min(BATCH, n) + 1) if n % d == 0))


class _Batches:
    """ONNX Runtime calibration data (a `CalibrationDataReader` by its `get_next`): the tiny set in batches of one
    size (the histogram calibrators stack them), handed over one batch per range, so that the calibrator holds one
    batch's intermediate outputs at a time (`CalibStridedMinMax=1`), not the whole set's."""

    def __init__(self, images: torch.Tensor) -> None:
        self._batches = [{"pixel_values": x.numpy()} for x in _even_batches(images)]
        self._next = iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next = iter(self._batches[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._next, None)


def _quantize_onnxruntime(prepared: _Prepared, images: torch.Tensor, method: str, tmp: Path) -> dict[str, bytes]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    out = tmp / f"model.int8.{method}.onnx"
    # the histogram calibrators print their progress, and write their augmented model to the current directory
    with contextlib.redirect_stdout(io.StringIO()), contextlib.chdir(tmp):
        quantize_static(
            prepared.model,
            out,
            _Batches(images),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method={m.name.lower(): m for m in CalibrationMethod}[method],
            nodes_to_exclude=prepared.stream,
            extra_options={"CalibStridedMinMax": 1},
        )
    return {ONNX_INT8_FILE: out.read_bytes()}


def _quantize_openvino(prepared: _Prepared, images: torch.Tensor, method: str, tmp: Path) -> dict[str, bytes]:
    import nncf
    import openvino as ov

    batches = [x.numpy() for x in _even_batches(images)]
    with contextlib.redirect_stdout(io.StringIO()):  # NNCF draws progress bars
        quantized = nncf.quantize(
            ov.Core().read_model(prepared.model),
            nncf.Dataset(batches),
            subset_size=len(batches),
            preset=nncf.QuantizationPreset(method),
            model_type=nncf.ModelType.TRANSFORMER if prepared.stream else None,
        )
    folder = tmp / f"openvino.{method}"
    ov.save_model(quantized, folder / OPENVINO_XML, compress_to_fp16=False)
    return {name: (folder / name).read_bytes() for name in (OPENVINO_XML, OPENVINO_BIN)}


def _runner(backend: str, files: dict[str, bytes], inputs: torch.Tensor, threads: int) -> Runner:
    arrays = _numpy([inputs.float()])
    if backend == "onnxruntime":
        return _onnxruntime_runner(files[ONNX_INT8_FILE], arrays, threads, torch.device("cpu"))
    with tempfile.TemporaryDirectory(prefix="hf_practise_int8_") as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        # OpenVINO reads an IR from a path (the .bin beside the .xml) and keeps it in memory once compiled
        return _openvino_runner(str(Path(tmp) / OPENVINO_XML), arrays, threads)


def _logits(backend: str, files: dict[str, bytes], images: torch.Tensor, threads: int) -> torch.Tensor:
    """Logits of `images` in batches, each run by the same kind of runner that latency times."""
    batches = images.split(BATCH)
    runner = _runner(backend, files, batches[0], threads)  # one session (one compile) for every batch
    outputs = [np.array(runner.on(_numpy([x.float()]))[0]) for x in batches]
    return torch.from_numpy(np.concatenate(outputs)).float()


def _float_ops(backend: str, files: dict[str, bytes]) -> list[str]:
    if backend == "onnxruntime":
        return _onnx_float_ops(files[ONNX_INT8_FILE])
    return _openvino_float_ops(files)


def _onnx_float_ops(data: bytes) -> list[str]:
    """Op types of a QDQ model with an input computed from the model input that no `DequantizeLinear` made."""
    import onnx

    graph = onnx.load_from_string(data).graph
    dequantized: set[str] = set()
    active = {i.name for i in graph.input}  # tensors computed from the input (not from shapes)
    kept = []
    for node in graph.node:  # ONNX nodes are in topological order
        inputs = [name for name in node.input if name in active]
        if not inputs or node.op_type in ("Shape", "Size"):
            continue
        active.update(node.output)
        if node.op_type == "DequantizeLinear":
            dequantized.update(node.output)
        elif node.op_type != "QuantizeLinear" and not dequantized.issuperset(inputs):
            kept.append(node.op_type)
    return _arithmetic(kept)


def _openvino_float_ops(files: dict[str, bytes]) -> list[str]:
    """Op types of an OpenVINO IR that the CPU plugin runs in a float precision (after its int8 fusions)."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(files[OPENVINO_XML], files[OPENVINO_BIN])
    types = {op.get_friendly_name(): op.get_type_name() for op in model.get_ordered_ops()}
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    kept = []
    for layer in compiled.get_runtime_model().get_ordered_ops():
        info = layer.get_rt_info()
        shape = layer.get_output_partial_shape(0) if layer.get_output_size() else None
        if shape is None or shape.is_static and math.prod(shape.to_shape()) <= 1:  # a scalar: shape arithmetic
            continue
        if str(info["runtimePrecision"].astype(str)).lower() in _FLOAT_PRECISIONS:
            kept += [types.get(name, "") for name in info["originalLayersNames"].astype(str).split(",")]
    return _arithmetic(kept)


def _arithmetic(op_types: Iterable[str]) -> list[str]:
    return sorted({t for t in op_types if t and t not in _MOVEMENT and t != "FakeQuantize"})


def _versions(backend: str) -> dict[str, str]:
    names = ("onnx", "onnxruntime") if backend == "onnxruntime" else ("openvino", "nncf")
    return {name: str(importlib.import_module(name).__version__) for name in ("torch", *names)}
