"""Kill a real compression mid-finetune (SIGKILL), resume it, and compare with the run that was never killed.

Both runs compress the shared resnet34-fmnist teacher with `examples/compress.py` on the same 500 Fashion-MNIST
train images (a `save_to_disk` folder written here), dropping a fixed number of blocks so that both choose the
same ones (the blocks' latency shares are measured once and passed to every run as `--latency-table`, so
timing noise cannot rank them differently). The killed run is stopped with SIGKILL once its checkpoint at `--kill-after` steps exists, then the
same command is run again with the same `--work-dir`. Writes the largest weight difference between the two
saved models to `benchmarks/results/kill_resume.{json,md}`.

    python benchmarks/kill_resume.py
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import fmnist  # noqa: E402

from hf_practise.provenance import machine, recorded_command  # noqa: E402

REPO = HERE.parent
TEACHER = REPO.parent / "shared" / "teachers" / "resnet34-fmnist"


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
        sys.executable, str(REPO / "examples" / "compress.py"), "--model", f"local-dir:{args.teacher}",
        "--dataset", str(data), "--num-samples", str(args.num_samples), "--num-blocks", str(args.num_blocks),
        "--iterations", str(args.iterations), "--checkpoint-every", str(args.checkpoint_every),
        "--work-dir", str(work), "--output-dir", str(out), "--latency-repeats", "3",
        "--scan-iterations", str(args.scan_iterations), "--latency-table", str(table),
    ]  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default=str(TEACHER))
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument("--num-blocks", type=int, default=4)
    p.add_argument("--iterations", type=int, default=600)
    p.add_argument("--scan-iterations", type=int, default=100)
    p.add_argument("--checkpoint-every", type=int, default=200)
    p.add_argument("--kill-after", type=int, default=400, help="SIGKILL once this step's checkpoint exists")
    p.add_argument("--results", default=str(HERE / "results"))
    args = p.parse_args()
    if not (Path(args.teacher) / "config.json").exists() or not fmnist.available():
        print("skipped: needs ../shared/teachers/resnet34-fmnist and dataset-fashion-mnist")
        return 0
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
        proc = subprocess.Popen(
            command(tmp / "data", tmp / "killed", tmp / "work-killed", args, table),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        mark = f"checkpoint-{args.kill_after:07d}"
        while proc.poll() is None and not list((tmp / "work-killed").glob(f"finetune-*/{mark}/state.json")):
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left = sorted(p.name for p in (tmp / "work-killed").glob("finetune-*/*"))
        resumed = subprocess.run(
            command(tmp / "data", tmp / "killed", tmp / "work-killed", args, table), capture_output=True, text=True
        )
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        resumed_s = time.time() - start
        a = load_file(str(tmp / "whole" / "model.safetensors"))
        b = load_file(str(tmp / "killed" / "model.safetensors"))
        diff = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
        report = json.loads((tmp / "killed" / "practise_report.json").read_text())
        whole_report = json.loads((tmp / "whole" / "practise_report.json").read_text())
        record = {
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
            "max_abs_weight_difference": diff,
            "seconds_uninterrupted": round(whole_s, 1),
            "seconds_killed_plus_resumed": round(resumed_s, 1),
            "command": recorded_command("python benchmarks/kill_resume.py", p, args, paths=("teacher", "results")),
            "machine": machine(),
        }
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kill_resume.json").write_text(json.dumps(record, indent=2))
    md = [
        "# Kill and resume: a SIGKILLed compression, resumed, against the uninterrupted one",
        "",
        f"Teacher `{record['teacher']}`, {args.num_samples} Fashion-MNIST train images, {args.num_blocks} blocks "
        f"dropped ({', '.join(record['dropped_resumed'])} in both runs), {args.iterations} finetune steps, "
        f"checkpoints every {args.checkpoint_every}, {args.scan_iterations} scan steps per block.",
        "",
        "| killed after checkpoint | resumed from step | tensors | differing | max abs weight difference |",
        "| ---: | ---: | ---: | ---: | ---: |",
        f"| {args.kill_after} | {record['resumed_from']} | {record['tensors']} | {record['tensors_differing']} "
        f"| {diff:.3g} |",
        "",
        f"Command: `{record['command']}`",
        "",
        f"Machine: {json.dumps(record['machine'])}",
        "",
    ]
    (out / "kill_resume.md").write_text("\n".join(md))
    print("\n".join(md))
    if record["dropped_uninterrupted"] != record["dropped_resumed"]:
        print("error: the two runs dropped different blocks; their weights are not comparable")
        return 1
    if record["resumed_from"] != args.kill_after:
        print(f"error: the rerun did not resume from step {args.kill_after} but from {record['resumed_from']}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
