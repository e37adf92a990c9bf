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

NUM_SAMPLES, NUM_BLOCKS = 500, 4


def write_tiny_set(folder: Path, num_samples: int, seed: int) -> None:
    """The train images as 32x32 RGB PIL images (2-pixel black border), the way the teacher expects them."""
    import datasets
    from PIL import Image

    images, labels = fmnist.load_raw("train")
    idx = np.sort(np.random.default_rng(seed).permutation(len(images))[:num_samples])
    pil = [Image.fromarray(np.pad(images[i], 2)).convert("RGB") for i in idx]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    datasets.Dataset.from_dict({"image": pil, "label": labels[idx].tolist()}, features=features).save_to_disk(
        str(folder)
    )


def write_latency_table(path: Path, teacher: str) -> None:
    """Each candidate's share of the teacher's latency, measured once here."""
    from hf_practise import LatencyConfig, PractiseCompressor
    from hf_practise.latency import block_latency_table

    comp = PractiseCompressor.from_pretrained(f"local-dir:{teacher}")
    config = LatencyConfig(repeats=5)
    shares, _ = block_latency_table(
        comp.model, comp.family, comp.candidates(), input_size=comp.input_size, config=config
    )
    path.write_text(json.dumps(shares))


def command(tmp: Path, name: str, args) -> list[str]:
    return [
        sys.executable, str(h.HERE.parent / "examples" / "compress.py"), "--model", f"local-dir:{args.teacher}",
        "--dataset", str(tmp / "data"), "--num-samples", str(NUM_SAMPLES), "--num-blocks", str(NUM_BLOCKS),
        "--iterations", str(args.iterations), "--checkpoint-every", str(args.checkpoint_every),
        "--work-dir", str(tmp / f"work-{name}"), "--output-dir", str(tmp / name), "--latency-repeats", "3",
        "--scan-iterations", str(args.scan_iterations), "--latency-table", str(tmp / "latency_table.json"),
    ]  # fmt: skip


def parser():
    p = h.parser(__doc__)
    p.add_argument("--teacher", default=str(h.RESNET34))
    p.add_argument("--iterations", type=int, default=600)
    p.add_argument("--scan-iterations", type=int, default=100)
    p.add_argument("--checkpoint-every", type=int, default=200)
    p.add_argument("--kill-after", type=int, default=400, help="SIGKILL once this step's checkpoint exists")
    h.folders(p)
    return p


def run(p, args) -> dict | None:
    if h.skipped(Path(args.teacher)):
        return None
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory(prefix="kill-resume-") as tmp:
        tmp = Path(tmp)
        write_tiny_set(tmp / "data", NUM_SAMPLES, seed=0)
        write_latency_table(tmp / "latency_table.json", args.teacher)
        start = time.time()
        whole = subprocess.run(command(tmp, "whole", args), capture_output=True)
        assert whole.returncode == 0, whole.stderr.decode()[-3000:]
        whole_s, start = time.time() - start, time.time()
        proc = subprocess.Popen(command(tmp, "killed", args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        mark = f"finetune-*/checkpoint-{args.kill_after:07d}/state.json"
        while proc.poll() is None and not list((tmp / "work-killed").glob(mark)):
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left = sorted(f.name for f in (tmp / "work-killed").glob("finetune-*/*"))
        resumed = subprocess.run(command(tmp, "killed", args), capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        resumed_s = time.time() - start
        a, b = (load_file(str(tmp / name / "model.safetensors")) for name in ("whole", "killed"))
        report, whole_report = (h.read_json(tmp / name / "practise_report.json") for name in ("killed", "whole"))
    record = {"teacher": Path(args.teacher).name, "killed_at_checkpoint": args.kill_after, "left_in_work_dir": left}
    record.update(resumed_from=report["finetune_resumed_from"], dropped_uninterrupted=whole_report["dropped_blocks"])
    record.update(dropped_resumed=report["dropped_blocks"], steps=args.iterations, same_keys=sorted(a) == sorted(b))
    record.update(tensors=len(a), tensors_differing=sum(not (a[k] == b[k]).all().item() for k in a))
    record["max_abs_weight_difference"] = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    return {**record, "seconds_uninterrupted": round(whole_s, 1), "seconds_killed_plus_resumed": round(resumed_s, 1)}


def render(record: dict) -> list[str]:
    args = h.flags(parser(), record)
    return [
        "# Kill and resume: a SIGKILLed compression, resumed, against the uninterrupted one",
        "",
        f"Teacher `{record['teacher']}`, {NUM_SAMPLES} Fashion-MNIST train images, {NUM_BLOCKS} blocks "
        f"dropped ({', '.join(record['dropped_resumed'])} in both runs), {args.iterations} finetune steps, "
        f"checkpoints every {args.checkpoint_every}, {args.scan_iterations} scan steps per block.",
        "",
        *h.table(
            ">killed after checkpoint | >resumed from step | >tensors | >differing | >max abs weight difference",
            [
                [record["killed_at_checkpoint"], record["resumed_from"], record["tensors"], record["tensors_differing"]]
                + [f"{record['max_abs_weight_difference']:.3g}"]
            ],
        ),
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
    paths = ("teacher", "results")
    return h.study(parser(), stem="kill_resume", run=run, paths=paths, render=render, check=check)


if __name__ == "__main__":
    sys.exit(main())
