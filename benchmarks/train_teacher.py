"""Train one of the families' benchmark teachers on Fashion-MNIST and commit-ready save it.

    python benchmarks/train_teacher.py timm-mobilenetv2 --epochs 20 --lr 0.05 --weight-decay 4e-5
    python benchmarks/train_teacher.py timm-vit --optimizer adamw --lr 1e-3 --weight-decay 0.05 --epochs 40
    python benchmarks/train_teacher.py timm-mobilenetv2 --init-from benchmarks/teachers/timm-mobilenetv2 --epochs 12
    python benchmarks/train_teacher.py hf-vit --quick 1500       # the families' quick recipe (about 5 min)

The recipe of the shared resnet34 teacher (SGD Nesterov, one-cycle, label smoothing 0.1, batch 128, random crop of
the 2-pixel-padded image + flip), weight decay on conv and linear weights only (a depthwise conv under weight decay
loses its filters). Writes `benchmarks/teachers/NAME/` atomically once complete; each epoch ends with a checkpoint
under `benchmarks/cache/teachers/NAME/` (the data order is a function of seed and epoch, so a resumed run trains
what the uninterrupted one would). `--init-from FOLDER` continues a committed teacher with a second one-cycle.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import fmnist
import harness as h
import torch
from torch import nn

from hf_practise import get_family
from hf_practise.checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from hf_practise.files import atomic_write_text, save_directory_atomically
from hf_practise.mimic import evaluate_top1
from hf_practise.training import as_logits

logger = logging.getLogger("train_teacher")
BLACK = (0.0 - fmnist.MEAN) / fmnist.STD  # a black pixel after normalisation: what the 2-pixel border holds
BATCH, SEED = 128, 0


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A random 32x32 crop of each image padded by 2 black pixels, and a horizontal flip of half of them."""
    n = len(x)
    padded = nn.functional.pad(x, (2, 2, 2, 2), value=BLACK)
    dy, dx = torch.randint(0, 5, (2, n), generator=g)
    rows = (dy[:, None] + torch.arange(32))[:, None, :, None].expand(n, 3, 32, 36)
    cols = (dx[:, None] + torch.arange(32))[:, None, None, :].expand(n, 3, 32, 32)
    out = padded.gather(2, rows).gather(3, cols)
    flip = torch.rand(n, generator=g) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on the weights of convs and linear layers only (not on norms, biases or tokens)."""
    decay, rest = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad:
                is_weight = name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear))
                (decay if is_weight else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def init_from(model: nn.Module, folder: Path, name: str) -> dict:
    """Load a committed teacher's weights into `model` (strictly); return its record, to be kept by the new one."""
    meta = folder / "teacher_metrics.json"
    if not meta.exists():
        raise SystemExit(f"--init-from {folder}: no teacher_metrics.json there; pass a committed teacher folder.")
    record = json.loads(meta.read_text())
    if record.get("recipe") != name:
        raise SystemExit(f"--init-from {folder} holds recipe {record.get('recipe')!r}, not {name!r}.")
    model.load_state_dict(h.load_native(folder).state_dict(), strict=True)
    keep = ("test_top1", "epochs", "train_steps", "train_seconds", "recipe_details", "history", "command")
    return {"folder": str(folder), **{k: record[k] for k in keep if k in record}}


def parser():
    p = h.parser(__doc__)
    p.add_argument("name", choices=h.FAMILIES, help="the teacher recipe (see teacher_recipes.py)")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    which = "sgd: Nesterov momentum 0.9 (the ResNet recipe); adamw: for ViTs trained from scratch"
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd", help=which)
    p.add_argument("--out", default=str(h.TEACHERS), help="teachers are written to OUT/NAME")
    p.add_argument("--cache", default=str(h.CACHE / "teachers"), help="per-epoch checkpoints (resume)")
    parent = "a committed teacher folder of this recipe to continue from (its weights, loaded strictly)"
    p.add_argument("--init-from", default=None, help=parent)
    quick = (
        "instead of the recipe above, the families' quick recipe (`harness.train_teacher`) for STEPS steps, trained in "
        "benchmarks/cache/families/NAME or taken from there when it is already (the teacher the benchmarks trained "
        "themselves before it was committed); --epochs, --lr, --weight-decay, --optimizer and --cache do not apply"
    )
    p.add_argument("--quick", type=int, default=None, metavar="STEPS", help=quick)
    return p


def quick(args, command: str) -> tuple[nn.Module, object, dict]:
    """The families' quick teacher of `args.name` (`--quick STEPS`), with its metrics as a committed teacher has them."""
    folder = h.CACHE / "families" / args.name
    record = h.train_teacher(args.name, steps=args.quick, seed=SEED, folder=folder)
    if record["train_steps"] != args.quick:
        raise SystemExit(
            f"{folder} holds a quick teacher of {record['train_steps']} steps, not {args.quick}: pass --quick "
            f"{record['train_steps']}, or delete the folder to train another."
        )
    model = h.load_native(folder / "teacher").eval()
    details = (
        f"the families' quick recipe: AdamW lr {h.quick_lr(args.name):g}, weight decay 0.05, 5% linear warm-up then cosine, label "
        "smoothing 0.1, batch 128, horizontal flip of half the images and one random shift of up to 2 pixels per batch"
    )
    metrics = {"recipe": args.name, "family": record["family"], "model": record["model"], "test_top1": record["top1"]}
    metrics.update(train_steps=args.quick, train_seconds=round(record["train_seconds"], 1), seed=SEED)
    metrics.update(recipe_details=details, command=command, machine=h.machine())
    return model, get_family(model), metrics


def main() -> int:
    p = parser()
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if h.skipped():
        return 0
    if args.quick is not None and (args.quick <= 0 or args.init_from):
        p.error("--quick takes a positive step count and trains from scratch (no --init-from)")
    command = h.command("train_teacher.py", p, args, paths=("out", "cache"))
    if args.quick is not None:
        model, family, metrics = quick(args, command)
        return write_teacher(args, model, family, metrics)
    ckpt_dir = Path(args.cache) / (args.name + ("-continued" if args.init_from else ""))
    train, test = fmnist.load("train"), fmnist.load("test")
    torch.manual_seed(SEED)
    model, description = h.build(args.name)
    family = get_family(model)
    parent = init_from(model, Path(args.init_from), args.name) if args.init_from else None
    if parent:
        logger.info("continuing %s from %s (test top-1 %.2f%%)", args.name, args.init_from, 100 * parent["test_top1"])
    groups = parameter_groups(model, args.weight_decay)
    sgd = args.optimizer == "sgd"
    opt = (
        torch.optim.SGD(groups, lr=args.lr, momentum=0.9, nesterov=True)
        if sgd
        else torch.optim.AdamW(groups, lr=args.lr)
    )
    steps_per_epoch = len(train) // BATCH
    total = args.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=total, pct_start=0.25, cycle_momentum=sgd
    )
    start_epoch, history, seconds = 0, [], 0.0
    saved = load_checkpoint(ckpt_dir)
    if saved is not None:
        if saved["command"] != command:
            raise SystemExit(
                f"{ckpt_dir} holds a run of another command ({saved['command']}); delete it to start over."
            )
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        set_rng_state(*saved["rng"])
        start_epoch, history, seconds = saved["step"], saved["history"], saved["seconds"]
        logger.info("resuming %s after epoch %d", args.name, start_epoch)

    images, labels = train.tensors
    for epoch in range(start_epoch, args.epochs):
        began = time.perf_counter()
        g = torch.Generator().manual_seed(SEED * 1000 + epoch)
        order = torch.randperm(len(images), generator=g)
        model.train()
        running = 0.0
        for i in range(steps_per_epoch):
            idx = order[i * BATCH : (i + 1) * BATCH]
            loss = nn.functional.cross_entropy(
                as_logits(model(augment(images[idx], g))), labels[idx], label_smoothing=0.1
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item()
        model.eval()
        top1 = evaluate_top1(model, test, batch_size=256, desc=f"eval {args.name}")
        seconds += time.perf_counter() - began
        history.append({"epoch": epoch + 1, "train_loss": running / steps_per_epoch, "test_top1": top1})
        loss = running / steps_per_epoch
        logger.info("%s epoch %d/%d: loss %.3f, test top-1 %.2f%%", args.name, epoch + 1, args.epochs, loss, 100 * top1)
        extra = {"command": command, "scheduler": sched.state_dict(), "history": history, "seconds": seconds}
        save_checkpoint(
            ckpt_dir, step=epoch + 1, model_state=model.state_dict(), optimizer_state=opt.state_dict(), extra=extra
        )

    details = f"{'SGD nesterov momentum 0.9' if sgd else 'AdamW'}, one-cycle (25% warm-up), label smoothing 0.1, batch "
    details += (
        f"{BATCH}, random crop of the 2-px-padded image + horizontal flip, weight decay {args.weight_decay:g} on "
    )
    details += f"conv/linear weights only, peak lr {args.lr:g}"
    metrics = {"recipe": args.name, "family": family.name, "model": description, "test_top1": history[-1]["test_top1"]}
    metrics.update(epochs=args.epochs, train_steps=total, train_seconds=round(seconds, 1), seed=SEED)
    metrics.update(recipe_details=details, history=history, command=command, machine=h.machine())
    if parent is not None:
        metrics["init_from"] = parent
        metrics["recipe_details"] += (
            f"; continued from a teacher of {parent['epochs']} epochs ({100 * parent['test_top1']:.2f}%, "
            f"`{parent['command']}`)"
        )

    return write_teacher(args, model, family, metrics)


def write_teacher(args, model: nn.Module, family, metrics: dict) -> int:
    """The committed teacher folder, OUT/NAME: the model as its library saves it and `teacher_metrics.json`."""

    def write(tmp: Path) -> None:
        h.save_native(model, tmp)
        if family.library_name == "timm":  # the data this teacher expects, for timm's own transforms
            config = json.loads((tmp / "config.json").read_text())
            normalise = {"mean": [fmnist.MEAN] * 3, "std": [fmnist.STD] * 3}
            config["pretrained_cfg"].update(input_size=[3, 32, 32], crop_pct=1.0, **normalise, num_classes=10)
            (tmp / "config.json").write_text(json.dumps(config, indent=2))
        atomic_write_text(tmp / "teacher_metrics.json", json.dumps(metrics, indent=1) + "\n")

    target = Path(args.out) / args.name
    save_directory_atomically(target, write, overwrite=True)
    minutes = metrics["train_seconds"] / 60
    print(
        f"{args.name}: test top-1 {100 * metrics['test_top1']:.2f}% after {metrics['train_steps']} steps ({minutes:.1f} min) -> {target}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
