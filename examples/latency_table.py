"""A latency table for `compress.py --latency-table`: each droppable block's share of the model's latency.

Measured here, in one of hf_practise's backends:

    python examples/latency_table.py --model timm/resnet50.a1_in1k --backend onnxruntime --output table.json

or for a device this machine cannot reach (TensorRT, a phone, an accelerator board): export the whole model and
every droppable block, each with the inputs the model really gives it, time them there, and fill in the table:

    python examples/latency_table.py --model timm/resnet50.a1_in1k --export-onnx blocks/
    # blocks/manifest.json lists model.onnx and one <block>.onnx per block with their input shapes;
    # time each on the device (e.g. `trtexec --onnx=blocks/layer3.1.onnx`), then write
    # {"layer3.1": <block ms> / <model ms>, ...} for every block listed, and pass it as --latency-table.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from hf_practise import LatencyConfig
from hf_practise.backbones import get_family
from hf_practise.files import atomic_write_bytes, atomic_write_text
from hf_practise.hub import load_model
from hf_practise.latency import block_latency_table, record_block_calls
from hf_practise.recoverability import build_pruned
from hf_practise.runtimes import BACKENDS, export_onnx_bytes, require_backend


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="anything compress.py's --model takes")
    p.add_argument("--revision", default=None)
    p.add_argument("--token", default=None)
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--batch-size", type=int, default=LatencyConfig.batch_size)
    p.add_argument("--input-size", type=int, nargs=3, default=None, metavar=("C", "H", "W"))
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--output", help="measure here and write the table (json) to this file")
    out.add_argument("--export-onnx", metavar="DIR", help="write the model and every block as ONNX to time elsewhere")
    p.add_argument("--backend", choices=list(BACKENDS), default="torch", help="where --output measures")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=LatencyConfig.repeats)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    try:
        if args.output:
            require_backend(args.backend)
        elif args.export_onnx:
            require_backend("onnxruntime")
        model, _ = load_model(
            args.model, revision=args.revision, token=args.token, trust_remote_code=args.trust_remote_code
        )
    except (ValueError, OSError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model.eval()
    family = get_family(model)
    size = tuple(args.input_size or family.data_config(model)["input_size"])
    blocks = family.candidates(model)
    if not blocks:
        print("error: this model has no droppable block", file=sys.stderr)
        return 2
    if args.output:
        config = LatencyConfig(
            batch_size=args.batch_size,
            threads=args.threads,
            repeats=args.repeats,
            input_size=size,
            backend=args.backend,
        )
        removable = family.feasible(model, blocks)
        without = (build_pruned(model, family, removable, adaptors=False), [r.path for r in removable])
        shares, stats = block_latency_table(model, family, blocks, input_size=size, config=config, without=without)
        atomic_write_text(args.output, json.dumps(shares, indent=1))
        print(f"{len(shares)} block shares measured in {stats.runtime()} -> {args.output}")
        return 0
    folder = Path(args.export_onnx)
    x = torch.randn(args.batch_size, *size)
    modules, calls = record_block_calls(model, family, blocks, x)
    manifest = {
        "model": {"file": "model.onnx", "inputs": [list(x.shape)]},
        "blocks": {},
        "how": "time model.onnx and each block file on the device; the table is {block: block time / model time}",
    }
    atomic_write_bytes(folder / "model.onnx", export_onnx_bytes(model, (x,)))
    for path, module in modules.items():
        args_, kwargs = calls[path]
        name = f"{path}.onnx"
        atomic_write_bytes(folder / name, export_onnx_bytes(module, args_, kwargs))
        shapes = [
            list(t.shape) for t in torch.utils._pytree.tree_leaves((args_, kwargs)) if isinstance(t, torch.Tensor)
        ]
        manifest["blocks"][path] = {"file": name, "inputs": shapes}
    atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=1))
    print(f"wrote model.onnx and {len(modules)} block files to {folder} (see manifest.json)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
