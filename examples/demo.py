# The whole hf_practise job on an embedded default, offline, in a few minutes on a laptop CPU.
#
# What it shows: a user with a pretrained model and a handful of images. With no network and no data of our
# own, it makes both: scikit-learn's bundled handwritten digits (1,797 8x8 images) become a 32x32 RGB
# `datasets` dataset with train/test splits, and a timm resnet18 is trained on the train split for a minute
# and saved as a timm `local-dir:` checkpoint. Then `examples/compress.py` compresses that teacher with 200
# train images and reports latency and top-1 on the test split before and after.
#
#   python examples/demo.py [--output-dir outputs/demo] [--latency-reduction 0.3] [any examples/compress.py flag]
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MEAN, STD = 0.5, 0.5


def digits_dataset(root: Path):
    """scikit-learn's digits as a DatasetDict of 32x32 RGB PIL images, saved with `save_to_disk`."""
    import datasets
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0 * 255).astype(np.uint8)
    pil = [Image.fromarray(im).resize((32, 32), Image.BILINEAR).convert("RGB") for im in images]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(i) for i in range(10)])}
    )
    g = np.random.default_rng(0)
    order = g.permutation(len(pil))
    split = int(0.75 * len(pil))
    parts = {"train": order[:split], "test": order[split:]}
    dd = datasets.DatasetDict(
        {
            name: datasets.Dataset.from_dict(
                {"image": [pil[i] for i in idx], "label": [int(digits.target[i]) for i in idx]}, features=features
            )
            for name, idx in parts.items()
        }
    )
    dd.save_to_disk(str(root))
    return dd


def train_teacher(dd, root: Path, *, epochs: int, seed: int) -> float:
    """Train a timm resnet18 on the digits and save it as a `local-dir:` checkpoint; return its test top-1."""
    import timm
    from torchvision import transforms

    torch.manual_seed(seed)
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize([MEAN] * 3, [STD] * 3)])
    x = torch.stack([tf(im) for im in dd["train"]["image"]])
    y = torch.tensor(dd["train"]["label"])
    xt = torch.stack([tf(im) for im in dd["test"]["image"]])
    yt = torch.tensor(dd["test"]["label"])
    steps_per_epoch = len(x) // 64
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=epochs * steps_per_epoch)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(steps_per_epoch):
            idx = perm[i * 64 : (i + 1) * 64]
            xb = x[idx]
            shift = torch.randint(-2, 3, (2,))
            xb = torch.roll(xb, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
            loss = torch.nn.functional.cross_entropy(model(xb), y[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"teacher epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}", flush=True)
    model.eval()
    with torch.no_grad():
        top1 = (model(xt).argmax(-1) == yt).float().mean().item()
    # timm's own serializer: config.json (architecture, model_args, pretrained_cfg) and model.safetensors
    timm.models.save_for_hf(
        model,
        str(root),
        model_config={
            "pretrained_cfg": {
                "input_size": [3, 32, 32],
                "interpolation": "bilinear",
                "crop_pct": 1.0,
                "crop_mode": "center",
                "mean": [MEAN] * 3,
                "std": [STD] * 3,
                "license": "apache-2.0",
            },
            "label_names": [str(i) for i in range(10)],
        },
        safe_serialization=True,
    )
    return top1


def main() -> int:
    p = argparse.ArgumentParser(description="hf_practise demo on scikit-learn digits, offline.")
    p.add_argument("--output-dir", default="outputs/demo")
    p.add_argument("--latency-reduction", type=float, default=0.3)
    p.add_argument("--num-samples", type=int, default=200)
    p.add_argument("--teacher-epochs", type=int, default=6)
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    # any other flag goes to examples/compress.py as is (after the demo's own, so it wins): e.g. --objective kd
    args, passthrough = p.parse_known_args()
    out = Path(args.output_dir)
    data_dir, teacher_dir = out / "digits", out / "teacher"
    if not (data_dir / "dataset_dict.json").exists():
        print(f"writing the digits dataset to {data_dir}")
        dd = digits_dataset(data_dir)
    else:
        import datasets

        dd = datasets.load_from_disk(str(data_dir))
    if not (teacher_dir / "model.safetensors").exists():
        print(f"training a resnet18 teacher on {len(dd['train'])} digits ({args.teacher_epochs} epochs)")
        print(
            f"teacher test top-1: {100 * train_teacher(dd, teacher_dir, epochs=args.teacher_epochs, seed=args.seed):.2f}%"
        )
    import compress

    return compress.main(
        [
            "--model",
            f"local-dir:{teacher_dir}",
            "--dataset",
            str(data_dir),
            "--split",
            "train",
            "--eval-split",
            "test",
            "--num-samples",
            str(args.num_samples),
            "--latency-reduction",
            str(args.latency_reduction),
            "--iterations",
            str(args.iterations),
            "--scan-iterations",
            "50",
            "--seed",
            str(args.seed),
            "--output-dir",
            str(out / "compressed"),
            "--work-dir",
            str(out / "work"),
            "--overwrite",
            *passthrough,
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
