"""Kill a real compression mid-finetune (SIGKILL), resume it, and compare with the run that was never killed.

Both runs compress the shared resnet34-fmnist teacher with `examples/compress.py` on the same 500 Fashion-MNIST
train images (a `save_to_disk` folder written here), dropping a fixed number of blocks; the blocks' latency shares
are measured once and passed to both as `--latency-table`, so timing noise cannot rank them differently. The killed
run is stopped once its checkpoint at `--kill-after` steps exists, then run again with the same `--work-dir`.
Writes the largest weight difference between the two saved models to `results/kill_resume.{json,md}`.

    python benchmarks/kill_resume.py
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fmnist
import harness as h
import numpy as np

from hf_practise.provenance import machine


def write_tiny_set(folder: Path, num_samples: int, seed: int) -> None:
    """The train images as 32x32 RGB PIL images (2-pixel black border), the way the teacher expects them."""
    import datasets
    from PIL import Image

    images, labels = fmnist.load_raw("train")
    idx = np.sort(np.random.default_rng(seed).permutation(len(images))[:num_samples])
    pil = [Image.fromarray(np.pad(images[i], 2)).convert("RGB") for i in idx]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    ds = datasets.Dataset.from_dict({"image": pil, "label": labels[idx].tolist()}, features=features)
    ds.save_to_disk(str(folder))


def write_latency_table(path: Path, teacher: str) -> None:
    """Each candidate's share of the teacher's latency, measured once here."""
    from hf_practise import LatencyConfig, PractiseCompressor
    from hf_practise.latency import block_latency_table

    comp = PractiseCompressor.from_pretrained(f"local-dir:{teacher}")
    shares, _ = block_latency_table(
        comp.model, comp.family, comp.candidates(), input_size=comp.input_size, config=LatencyConfig(repeats=5)
    )
    path.write_text(json.dumps(shares))


def command(data: Path, out: Path, work: Path, args, table: Path) -> list[str]:
    return [
        sys.executable, str(h.HERE.parent / "examples" / "compress.py"), "--model", f"local-dir:{args.teacher}",
        "--dataset", str(data), "--num-samples", str(args.num_samples), "--num-blocks", str(args.num_blocks),
        "--iterations", str(args.iterations), "--checkpoint-every", str(args.checkpoint_every),
        "--work-dir", str(work), "--output-dir", str(out), "--latency-repeats", "3",
        "--scan-iterations", str(args.scan_iterations), "--latency-table", str(table),
    ]  # fmt: skip


def parser():
    p = h.parser(__doc__)
    p.add_argument("--teacher", default=str(h.RESNET34))
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument("--num-blocks", type=int, default=4)
    p.add_argument("--iterations", type=int, default=600)
    p.add_argument("--scan-iterations", type=int, default=100)
    p.add_argument("--checkpoint-every", type=int, default=200)
    p.add_argument("--kill-after", type=int, default=400, help="SIGKILL once this step's checkpoint exists")
    p.add_argument("--results", default=str(h.RESULTS))
    return p


def run(p, args) -> dict | None:
    if h.skipped(Path(args.teacher)):
        return None
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory(prefix="kill-resume-") as tmp:
        tmp = Path(tmp)
        write_tiny_set(tmp / "data", args.num_samples, seed=0)
        table = tmp / "latency_table.json"
        write_latency_table(table, args.teacher)
        start = time.time()
        whole = subprocess.run(
            command(tmp / "data", tmp / "whole", tmp / "work-whole", args, table), capture_output=True
        )
        assert whole.returncode == 0, whole.stderr.decode()[-3000:]
        whole_s = time.time() - start

        start = time.time()
        cmd = command(tmp / "data", tmp / "killed", tmp / "work-killed", args, table)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        mark = f"checkpoint-{args.kill_after:07d}"
        while proc.poll() is None and not list((tmp / "work-killed").glob(f"finetune-*/{mark}/state.json")):
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left = sorted(f.name for f in (tmp / "work-killed").glob("finetune-*/*"))
        resumed = subprocess.run(cmd, capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        resumed_s = time.time() - start
        a = load_file(str(tmp / "whole" / "model.safetensors"))
        b = load_file(str(tmp / "killed" / "model.safetensors"))
        report = h.read_json(tmp / "killed" / "practise_report.json")
        whole_report = h.read_json(tmp / "whole" / "practise_report.json")
        return {
            "teacher": Path(args.teacher).name,
            "killed_at_checkpoint": args.kill_after,
            "left_in_work_dir": left,
            "resumed_from": report["finetune_resumed_from"],
            "dropped_uninterrupted": whole_report["dropped_blocks"],
            "dropped_resumed": report["dropped_blocks"],
            "steps": args.iterations,
            "same_keys": sorted(a) == sorted(b),
            "tensors": len(a),
            "tensors_differing": sum(not (a[k] == b[k]).all().item() for k in a),
            "max_abs_weight_difference": max((a[k].double() - b[k].double()).abs().max().item() for k in a),
            "seconds_uninterrupted": round(whole_s, 1),
            "seconds_killed_plus_resumed": round(resumed_s, 1),
            "command": args.command,
            "machine": machine(),
        }


def render(record: dict) -> list[str]:
    args = h.flags(parser(), record)
    return [
        "# Kill and resume: a SIGKILLed compression, resumed, against the uninterrupted one",
        "",
        f"Teacher `{record['teacher']}`, {args.num_samples} Fashion-MNIST train images, {args.num_blocks} blocks "
        f"dropped ({', '.join(record['dropped_resumed'])} in both runs), {args.iterations} finetune steps, "
        f"checkpoints every {args.checkpoint_every}, {args.scan_iterations} scan steps per block.",
        "",
        "| killed after checkpoint | resumed from step | tensors | differing | max abs weight difference |",
        "| ---: | ---: | ---: | ---: | ---: |",
        f"| {record['killed_at_checkpoint']} | {record['resumed_from']} | {record['tensors']} "
        f"| {record['tensors_differing']} | {record['max_abs_weight_difference']:.3g} |",
        "",
        f"Command: `{record['command']}`",
        "",
        f"Machine: {json.dumps(record['machine'])}",
    ]


def check(record: dict) -> str | None:
    if record["dropped_uninterrupted"] != record["dropped_resumed"]:
        return "the two runs dropped different blocks; their weights are not comparable"
    if record["resumed_from"] != record["killed_at_checkpoint"]:
        return f"the rerun did not resume from step {record['killed_at_checkpoint']} but from {record['resumed_from']}"
    return None


def main() -> int:
    p = parser()
    return h.study(
        p,
        stem=lambda a: Path(a.results) / "kill_resume",
        run=run,
        paths=("teacher", "results"),
        render=render,
        check=check,
    )


if __name__ == "__main__":
    sys.exit(main())
