"""Where a forward pass runs when it is timed: PyTorch eager, ONNX Runtime or OpenVINO, behind one interface.

A `Runner` is one module bound to one fixed input, ready to run in a backend; `latency.py` times runners and
never needs to know which backend it holds. For the runtimes, the module (a whole model or one block, with the
arguments the model really called it with) is exported to ONNX in memory and loaded into the runtime, so a
block's share of the time is the one it has where the model will be deployed.

The runtimes are optional extras: `pip install "hf-practise[onnx]"` (ONNX Runtime) and
`pip install "hf-practise[openvino]"`.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils import _pytree as pytree

logger = logging.getLogger(__name__)

__all__ = ["BACKENDS", "Runner", "RuntimeInfo", "export_onnx_bytes", "make_runner", "require_backend"]

BACKENDS = ("torch", "onnxruntime", "openvino")

# backend -> (modules it imports, the extra that installs them)
_NEEDS = {"onnxruntime": (("onnx", "onnxruntime"), "onnx"), "openvino": (("onnx", "openvino"), "openvino")}


def require_backend(backend: str) -> None:
    """Fail with the install command when a latency backend's runtime is missing."""
    if backend not in BACKENDS:
        raise ValueError(f"Unknown latency backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
    if backend == "torch":
        return
    modules, extra = _NEEDS[backend]
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ImportError(
                f"The {backend!r} latency backend needs `{name}`, which is not installed: "
                f'pip install "hf-practise[{extra}]"'
            ) from e


@dataclass(frozen=True)
class RuntimeInfo:
    """What ran the timed passes: the backend, its version and its provider or device."""

    backend: str
    version: str
    provider: str

    def to_dict(self) -> dict:
        return asdict(self)


class Runner:
    """One forward pass of a bound module on its fixed input, in a backend; calling it runs the pass."""

    def __init__(self, run: Callable[[], object], info: RuntimeInfo, run_on: Callable[[list], object] | None = None):
        self._run, self._run_on = run, run_on
        self.info = info

    def __call__(self) -> object:
        return self._run()

    def on(self, inputs: list) -> object:
        """The same loaded model on other inputs (numpy arrays, in input order): no second session or compile."""
        if self._run_on is None:
            raise NotImplementedError(f"A {self.info.backend} runner runs only the input it was bound to.")
        return self._run_on(inputs)


class _Bound(nn.Module):
    """`module(*args, **kwargs)` with every tensor in the arguments as a positional input and the tensors of
    the output as a flat tuple: the shape an exporter wants, whatever the block's signature."""

    def __init__(self, module: nn.Module, args: tuple, kwargs: dict):
        super().__init__()
        self.module = module
        leaves, self._spec = pytree.tree_flatten((args, kwargs))
        self._slots = [i for i, v in enumerate(leaves) if isinstance(v, torch.Tensor)]
        self._leaves = [None if isinstance(v, torch.Tensor) else v for v in leaves]
        self.example = tuple(leaves[i] for i in self._slots)

    def forward(self, *tensors: torch.Tensor):
        leaves = list(self._leaves)
        for i, t in zip(self._slots, tensors):
            leaves[i] = t
        args, kwargs = pytree.tree_unflatten(leaves, self._spec)
        out = self.module(*args, **kwargs)
        if hasattr(out, "to_tuple"):  # a transformers ModelOutput
            out = out.to_tuple()
        return tuple(t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor))


def export_onnx_bytes(
    module: nn.Module,
    args: Sequence = (),
    kwargs: dict | None = None,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_batch: bool = False,
    opset: int = 17,
) -> bytes:
    """`module` called with `args`/`kwargs` as an ONNX model (serialised), in eval mode.

    Non-tensor arguments are baked in; every tensor argument is an input, every tensor of the output an output.
    Tries torch's TorchScript-based exporter (fast, broad), then the torch.export-based one.
    """
    bound = _Bound(module, tuple(args), dict(kwargs or {})).eval()
    names = list(input_names or [f"input_{i}" for i in range(len(bound.example))])
    dynamic = {n: {0: "batch"} for n in names} if dynamic_batch else None
    errors = []
    with torch.no_grad():
        buffer = io.BytesIO()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    bound,
                    bound.example,
                    buffer,
                    dynamo=False,
                    input_names=names,
                    output_names=list(output_names) if output_names else None,
                    dynamic_axes=dynamic,
                    opset_version=opset,
                )
            return buffer.getvalue()
        except Exception as e:  # noqa: BLE001 - any exporter failure: try the other exporter
            errors.append(f"TorchScript exporter: {type(e).__name__}: {e}")
        try:
            shapes = None
            if dynamic_batch:
                batch = torch.export.Dim("batch")
                shapes = tuple({0: batch} for _ in bound.example)
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                program = torch.onnx.export(
                    bound,
                    bound.example,
                    dynamo=True,
                    input_names=names,
                    output_names=list(output_names) if output_names else None,
                    dynamic_shapes=shapes,
                    opset_version=max(opset, 18),
                    verbose=False,
                )
            return program.model_proto.SerializeToString()
        except Exception as e:  # noqa: BLE001
            errors.append(f"torch.export exporter: {type(e).__name__}: {e}")
    raise RuntimeError(
        f"Could not export {type(module).__name__} to ONNX:\n  " + "\n  ".join(err[:500] for err in errors)
    )


def _numpy(tensors: Sequence[torch.Tensor]) -> list:
    return [t.detach().cpu().contiguous().numpy() for t in tensors]


def _torch_runner(module: nn.Module, args: tuple, kwargs: dict, device: torch.device) -> Runner:
    provider = "cuda" if device.type == "cuda" else "cpu"
    return Runner(lambda: module(*args, **kwargs), RuntimeInfo("torch", str(torch.__version__), provider))


def _onnxruntime_runner(onnx: bytes, inputs: list, threads: int, device: torch.device) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    # no spinning between runs: the model and each of its blocks are loaded at once, and idle sessions' spinning
    # thread pools would steal the cores of the one being timed (measured: 73 ms vs 39 ms for resnet34 at batch
    # 64 with six sessions alive on 2 cores)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    session = ort.InferenceSession(onnx, options, providers=providers)
    names = [i.name for i in session.get_inputs()]
    feed = dict(zip(names, inputs))
    provider = session.get_providers()[0]
    info = RuntimeInfo("onnxruntime", ort.__version__, provider)
    return Runner(lambda: session.run(None, feed), info, lambda xs: session.run(None, dict(zip(names, xs))))


def _openvino_runner(onnx: bytes, inputs: list, threads: int) -> Runner:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(onnx),
        "CPU",
        # f32 like the PyTorch model: OpenVINO would otherwise run bf16 on CPUs that have it
        {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"},
    )
    request = compiled.create_infer_request()
    feed = dict(enumerate(inputs))
    name = core.get_property("CPU", "FULL_DEVICE_NAME")
    info = RuntimeInfo("openvino", ov.__version__, f"CPU ({name})")
    return Runner(lambda: request.infer(feed), info, lambda xs: request.infer(dict(enumerate(xs))))


def make_runner(
    module: nn.Module, args: Sequence = (), kwargs: dict | None = None, *, backend: str = "torch", threads: int = 1
) -> Runner:
    """`module(*args, **kwargs)` ready to run in `backend` with `threads` CPU threads (the runtimes)."""
    require_backend(backend)
    args, kwargs = tuple(args), dict(kwargs or {})
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    if backend == "torch":
        return _torch_runner(module, args, kwargs, device)
    onnx = export_onnx_bytes(module, args, kwargs)
    inputs = _numpy(_Bound(module, args, kwargs).example)
    if backend == "onnxruntime":
        return _onnxruntime_runner(onnx, inputs, threads, device)
    return _openvino_runner(onnx, inputs, threads)
