"""The library on a GPU: compress a Fashion-MNIST teacher end to end on CUDA and check what comes out.

    python benchmarks/gpu_check.py                                           # CUDA, ../shared, Fashion-MNIST
    python benchmarks/gpu_check.py --device cpu --quick --results /tmp/gpu   # the same path on CPU, tiny, minutes

One `PractiseCompressor` run in bf16 (Accelerate mixed precision; latency timed on the device under autocast,
synchronised): 500 seeded train images, target 0.22, top-1 on the 10,000 test images, the saved folder reloaded
by plain timm in a fresh process, logits compared. Again under `accelerate launch --multi_gpu --num_processes 2`
with two GPUs (CPU: two gloo processes). Writes results/gpu_check.{json,md}; without CUDA, the teacher, the data
or `datasets`/`evaluate` it says what is missing, writes nothing and exits 0.

The device machine gets the working tree only (64 MiB in all, with what `carry` names), so:
1. here, `python benchmarks/gpu_check.py --pack benchmarks/cache/gpu_check` writes the images a run reads (5 MB);
2. ../shared/teachers/resnet34-fmnist (85 MB) cannot travel: `--teacher benchmarks/teachers/timm-resnet50` can;
3. `datasets`, `evaluate`, `dill`, `multiprocess` are not installed there: bring their wheels in .whl/ (as the
   device tool's README says) and run, with carry [benchmarks/cache/gpu_check, .whl]:
   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:src
   python3 benchmarks/gpu_check.py --data benchmarks/cache/gpu_check --teacher benchmarks/teachers/timm-resnet50 \
       --results $OUT     # and copy the gpu_check.{json,md} that come back into benchmarks/results/
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

import fmnist
import harness as h
import torch

LAUNCH_TWO = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "bf16", "--dynamo_backend", "no"]  # fmt: skip
COLUMNS = ["run", "device", ">measured latency reduction", ">teacher ms", ">compressed ms", ">top-1 before",
           ">top-1 after", ">wall s", ">plain-timm reload max abs logit diff (on CPU)"]  # fmt: skip


def parser() -> argparse.ArgumentParser:
    p = h.parser(__doc__)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny settings: 64 images, a few steps (tests the path)")
    p.add_argument("--teacher", default=str(h.RESNET34), help="a timm local-dir: checkpoint of a Fashion-MNIST teacher")
    p.add_argument("--data", default=str(fmnist.FMNIST_DIR), help="Fashion-MNIST IDX files (or a --pack folder)")
    p.add_argument("--target", type=float, default=0.22)
    p.add_argument("--num-samples", type=int, default=500, help="seeded tiny-set images (--quick: 64)")
    p.add_argument("--eval-samples", type=int, default=None, help="seeded test images (default all; --quick: 256)")
    h.folders(p)
    p.add_argument("--pack", default=None, help="only write the images a run reads, as IDX files, to this folder")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # one compression, its record to this folder
    if p.parse_known_args()[0].quick:  # its sizes become the defaults, so the recorded command says `--quick`
        p.set_defaults(num_samples=64, eval_samples=256)
    return p


def compress_once(args: argparse.Namespace) -> None:
    """One compression; each process of `accelerate launch` runs this, the main one saves and checks."""
    from accelerate import Accelerator
    from native import reload_logits

    from hf_practise import CompressionConfig, FinetuneConfig, LatencyConfig, PractiseCompressor, ScanConfig
    from hf_practise.training import as_logits

    accelerator = Accelerator(cpu=args.device == "cpu", mixed_precision="bf16")
    tiny = fmnist.load("train", num_samples=args.num_samples, seed=0)
    test = fmnist.load("test", num_samples=args.eval_samples, seed=0)
    quick = args.quick
    config = CompressionConfig(
        latency_reduction=args.target,
        seed=0,
        scan=ScanConfig(iterations=3, batch_size=16) if quick else ScanConfig(),
        finetune=FinetuneConfig(iterations=4, batch_size=16) if quick else FinetuneConfig(),
        latency=LatencyConfig(batch_size=8 if quick else 64, repeats=3 if quick else 20, precision="bf16"),
    )
    compressor = PractiseCompressor.from_pretrained(f"local-dir:{args.teacher}", config, accelerator=accelerator)
    result = compressor.compress(tiny, test)
    if accelerator.is_main_process:
        folder = result.save_pretrained(Path(args.worker) / "model")
        x = test.tensors[0][:64]
        reloaded = reload_logits(folder, "timm", x)  # plain timm, in a process that never imports hf_practise
        with torch.no_grad():
            on_device = as_logits(result.model(x.to(accelerator.device))).float().cpu()
            on_cpu = as_logits(result.model.cpu()(x)).float()
        lat = result.latency
        record = {"device": lat.base.device_name, "latency_reduction": lat.reduction}  # the parent adds wall_seconds
        record.update(teacher_ms=lat.base.median_ms, compressed_ms=lat.candidate.median_ms)
        record.update(latency_runtime=lat.base.runtime(), top1_before=result.top1_before, top1_after=result.top1_after)
        record.update(dropped=[r.block for r in result.dropped], eval_images=len(test))
        record.update(reload_max_abs_logit_diff=(reloaded - on_device).abs().max().item())
        record.update(reload_max_abs_logit_diff_cpu=(reloaded - on_cpu).abs().max().item())
        (Path(args.worker) / "record.json").write_text(json.dumps({**record, "phase_seconds": result.phase_seconds}))
    accelerator.wait_for_everyone()


def missing(args: argparse.Namespace) -> list[str]:
    """What a run needs and this machine lacks, each with how to get it."""
    teacher = f"the teacher `{args.teacher}` (no config.json): pass --teacher, a timm local-dir: folder"
    data = f"Fashion-MNIST under `{args.data}`: `apt-get install dataset-fashion-mnist`, or --data a --pack folder"
    out = [] if (Path(args.teacher) / "config.json").is_file() else [teacher]
    out += [] if fmnist.available() else [data]
    return out + [f"`{lib}` (pip install {lib})" for lib in ("datasets", "evaluate") if not find_spec(lib)]


def render(doc: dict) -> list[str]:
    s, done = doc["settings"], [r for r in doc["runs"] if "note" not in r]
    rows = []
    for r in doc["runs"]:
        rows.append([r["run"], r["note"], *[None] * (len(COLUMNS) - 2)] if "note" in r else [r["run"], r["device"]])
        if "note" not in r:
            rows[-1] += [f"{100 * r['latency_reduction']:.1f}%", f"{r['teacher_ms']:.2f}", f"{r['compressed_ms']:.2f}"]
            rows[-1] += [f"{100 * r['top1_before']:.2f}%", f"{100 * r['top1_after']:.2f}%", f"{r['wall_seconds']:.0f}"]
            rows[-1].append(f"{r['reload_max_abs_logit_diff']:.2g} ({r['reload_max_abs_logit_diff_cpu']:.2g})")
    return [
        f"# hf_practise on a GPU: {s['teacher']} compressed end to end",
        "",
        f"{s['num_samples']} seeded Fashion-MNIST train images, target {100 * s['target']:.0f}%, top-1 on "
        f"{done[0]['eval_images'] if done else s['eval_samples']} test images, bf16 finetune and latency (autocast) "
        "on the device; plain timm reloads the saved folder in a fresh process: its logits on 64 test images against "
        "the compressed model's on the device (and on the CPU).",
        "",
        *h.table(" | ".join(COLUMNS), rows),
        "",
        f"Command: `{doc['command']}`",
        "",
        f"Machine: {json.dumps(doc['machine'])}",
    ]


def run(p, args) -> dict | None:
    fmnist.FMNIST_DIR = Path(args.data)
    if args.worker:
        compress_once(args)
        return None
    if args.pack:  # the draws of `fmnist.load` in a run, so a run on the packed folder reads the same images
        for split, n in (("train", args.num_samples), ("test", args.eval_samples)):
            images, labels = fmnist.load_raw(split)
            idx = fmnist.draw(len(images), n or len(images), seed=0)
            fmnist.save_raw(Path(args.pack), split, images[idx], labels[idx])
        print(f"wrote {args.num_samples} train and {args.eval_samples or 'all'} test images to {args.pack}")
        return None
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: gpu_check did not run")
        return None
    if lacking := missing(args):
        print("skipped: gpu_check needs " + "; ".join(lacking))
        return None
    from hf_practise.provenance import public_name

    env = dict(os.environ, **({"ACCELERATE_USE_CPU": "1"} if args.device == "cpu" else {}))
    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    runs = []
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        for name, launch in (("1 process", []), ("2 processes", LAUNCH_TWO)):
            if launch and args.device == "cuda" and gpus < 2:
                runs.append({"run": name, "note": f"{gpus} GPU: two-process run not possible"})
                continue
            work = Path(tmp) / name.replace(" ", "-")
            began = time.perf_counter()
            proc = subprocess.run([sys.executable, *launch, __file__, *sys.argv[1:], "--worker", str(work)], env=env)
            wall = time.perf_counter() - began
            if proc.returncode != 0 or not (work / "record.json").exists():
                runs.append({"run": name, "note": f"failed (exit {proc.returncode}): see the output above"})
                continue
            runs.append({"run": name, **json.loads((work / "record.json").read_text()), "wall_seconds": wall})
    settings = {k: getattr(args, k) for k in ("device", "quick", "target", "num_samples", "eval_samples")}
    return {"settings": {**settings, "teacher": public_name(args.teacher)}, "runs": runs}


def check(doc: dict) -> str | None:
    return "a run failed (see the output above)" if any("failed" in r.get("note", "") for r in doc["runs"]) else None


def main() -> int:
    paths = ("teacher", "data", "results")
    return h.study(parser(), stem="gpu_check", run=run, render=render, check=check, paths=paths)


if __name__ == "__main__":
    sys.exit(main())
