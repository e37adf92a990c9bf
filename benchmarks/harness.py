"""What every benchmark shares: its teachers, Fashion-MNIST and the tiny sets, the recorded command and machine, and the
one path from a run to its record (`results/NAME.json`) and from the record to its page (`results/NAME.md`).

A script is its own flags and its study: `study` runs it, writes the json, and renders the markdown from what the json
holds, so `--report` renders a page again without rerunning anything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import fmnist
import numpy as np
import torch
from teacher_recipes import RECIPES
from torch import nn

from hf_practise import get_family
from hf_practise.files import atomic_write_text
from hf_practise.mimic import evaluate_top1
from hf_practise.provenance import device_name, recorded_command
from hf_practise.training import as_logits

logger = logging.getLogger("harness")
HERE = Path(__file__).resolve().parent
RESULTS, CACHE = HERE / "results", HERE / "cache"
TEACHERS = HERE / "teachers"  # committed teachers (benchmarks/train_teacher.py)
SHARED = HERE.parents[1] / "shared" / "teachers"  # ours, not our users': the resnet34 Fashion-MNIST teacher
RESNET34 = SHARED / "resnet34-fmnist"
INPUT = (3, 32, 32)
#: the benchmark teachers' recipe names (`teacher_recipes.RECIPES`)
FAMILIES = sorted(RECIPES)


# ---- records: the command, the machine, json and markdown ---------------------------------------------------------
def parser(doc: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def folders(p: argparse.ArgumentParser, cache: Path | None = None) -> None:
    """`--results` (where the records go) and, given a default, `--cache` (what a rerun reuses)."""
    p.add_argument("--results", default=str(RESULTS))
    if cache is not None:
        p.add_argument("--cache", default=str(cache))


def table(head: str, rows: Iterable[Iterable[Any]]) -> list[str]:
    """A markdown table: `head` names the columns, `|`-separated, a name starting `>` right-aligned (`^` centred);
    each row its cells (None: a blank cell, `| |`)."""
    names = [n.strip() for n in head.split("|")]
    align = [{">": "---:", "^": ":---:"}.get(n[:1], "---") for n in names]
    lines = [[n.lstrip(">^") or None for n in names], align, *rows]
    return [
        ("| " + " | ".join("\0" if c is None else str(c) for c in cells) + " |").replace(" \0 ", " ") for cells in lines
    ]


def section(intro: str, items: list[str]) -> list[str]:
    """A paragraph and its items, after a blank line; nothing without items."""
    return ["", intro, "", *items] if items else []


def command(script: str, p: argparse.ArgumentParser, args: argparse.Namespace, **kwargs: Any) -> str:
    """The command line that reproduces `args`, positional arguments first (see `provenance.recorded_command`)."""
    positional = [str(getattr(args, a.dest)) for a in p._actions if not a.option_strings]
    return recorded_command(" ".join([f"python benchmarks/{script}", *positional]), p, args, **kwargs)


def machine() -> dict[str, Any]:
    """The machine a number was measured on: processor, cores, threads, OS and library versions."""
    info: dict[str, Any] = {
        "cpu": device_name(torch.device("cpu")),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    for lib in ("timm", "transformers", "accelerate"):
        try:
            info[lib] = __import__(lib).__version__
        except ImportError:
            pass
    return info


def write_json(path: Path, record: Any) -> None:
    """Write a record atomically, so an interrupted run never leaves half a json."""
    as_json = lambda o: o.to_dict() if hasattr(o, "to_dict") else str(o)  # noqa: E731 - the package's results
    atomic_write_text(path, json.dumps(record, indent=2, default=as_json))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def cached_json(path: Path, compute: Callable[[], Any]) -> Any:
    """What `path` holds, or `compute()`, written there first."""
    if not path.exists():
        write_json(path, compute())
    return read_json(path)


def render_page(stem: Path, render: Callable[[Any], list[str]]) -> str:
    """STEM.md rendered from STEM.json (never from a run's memory: the page says what the record says)."""
    text = "\n".join(render(read_json(stem.with_suffix(".json")))) + "\n"
    atomic_write_text(stem.with_suffix(".md"), text)
    return text


def publish(stem: Path, record: Any, render: Callable[[Any], list[str]]) -> str:
    """STEM.json from `record`, then STEM.md from it."""
    write_json(stem.with_suffix(".json"), record)
    return render_page(stem, render)


def skipped(teacher: Path | None = None) -> bool:
    """Say `skipped` when Fashion-MNIST (and `teacher`, if given) is missing: ours, not our users'."""
    if fmnist.available() and (teacher is None or (Path(teacher) / "config.json").exists()):
        return False
    where = f"the teacher at {teacher} and " if teacher is not None else ""
    print(f"skipped: needs {where}Fashion-MNIST under {fmnist.FMNIST_DIR} (apt-get install dataset-fashion-mnist)")
    return True


def study(
    p: argparse.ArgumentParser,
    *,
    stem: str | Callable[[argparse.Namespace], Path],
    run: Callable[[argparse.ArgumentParser, argparse.Namespace], Any],
    render: Callable[[Any], list[str]],
    paths: tuple[str, ...] = ("results", "cache"),
    secrets: tuple[str, ...] = ("token",),
    check: Callable[[Any], str | None] | None = None,
    after: Callable[[Any, argparse.Namespace], None] | None = None,
    level: int = logging.INFO,
) -> int:
    """Run -> record -> page: `run(p, args)` (None: skipped; `args.command` is the command that reproduces it, its
    `paths` flags by folder name; a dict record gets the command and the machine) is written to STEM.json (`stem`:
    a name under --results, or the path for the flags), and STEM.md is rendered from that; `--report` renders
    STEM.md again from STEM.json. Then `after(record, args)` (e.g. the README's table); `check(record)` names what
    makes the exit status 1."""
    p.add_argument("--report", action="store_true", help="only render the markdown again from the json (no run)")
    args = p.parse_args()
    path = Path(args.results) / stem if isinstance(stem, str) else stem(args)
    if not args.report:
        logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s")
        args.command = command(Path(sys.argv[0]).name, p, args, paths=paths, secrets=secrets)
        record = run(p, args)
        if record is None:
            return 0
        if isinstance(record, dict):
            record = {"command": args.command, "machine": machine(), **record}
        write_json(path.with_suffix(".json"), record)
    print(render_page(path, render), end="")
    record = read_json(path.with_suffix(".json"))
    if after is not None:
        after(record, args)
    problem = check(record) if check else None
    if problem:
        print(f"error: {problem}")
    return 1 if problem else 0


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend, or None (said once per call) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logging.getLogger("harness").warning("matplotlib missing: no plot")
        return None
    return plt


#: the pages whose `bench:` sections the studies rewrite: the README (its headline) and the results page
PAGES = (HERE.parent / "README.md", HERE.parent / "docs" / "results.md")


def update_readme_section(name: str, lines: list[str]) -> None:
    """Replace what stands between `<!-- bench:NAME:begin -->` and `<!-- bench:NAME:end -->` in every page of
    `PAGES` that has those markers (atomically; a page without them is left alone)."""
    begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
    for page in PAGES:
        text = page.read_text() if page.exists() else ""
        if begin not in text or end not in text:
            continue
        before, rest = text.split(begin, 1)
        _, after = rest.split(end, 1)
        atomic_write_text(page, f"{before}{begin}\n" + "\n".join(lines) + f"\n{end}{after}")


# ---- other jobs of the machine ------------------------------------------------------------------------------------
def job_flags(p: argparse.ArgumentParser) -> None:
    """`--scan-threads` and `--pause-pids`: timing beside other jobs (see `paused` and `threads`)."""
    threads = "torch threads of the recoverability scan (no timing in it; default: torch's), e.g. 1 beside other jobs"
    p.add_argument("--scan-threads", type=int, default=None, help=threads)
    pause = "other jobs of this machine to stop (SIGSTOP) while timing and continue afterwards"
    p.add_argument("--pause-pids", type=int, nargs="*", default=[], help=pause)


@contextlib.contextmanager
def paused(pids: list[int]) -> Iterator[None]:
    """Stop other jobs of this machine (SIGSTOP) while timing, and let them go on afterwards (SIGCONT)."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(2.0 if pids else 0.0)
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[None]:
    """torch's threads set to `n` (None: unchanged) for the block (the scan does no timing: it can share)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---- tiny sets ----------------------------------------------------------------------------------------------------
def tiny_images(num_samples: int, seed: int = 0) -> torch.Tensor:
    """`num_samples` seeded draws from the Fashion-MNIST train split, as the teachers expect them."""
    return fmnist.load("train", num_samples=num_samples, seed=seed).tensors[0]


def tiny_set(kind: str, num_samples: int, seed: int, teacher: nn.Module, *, synth_steps: int = 200):
    """(images, labels or None) of a tiny set, (N, 3, 32, 32) normalised like Fashion-MNIST:
    - `fmnist`: seeded draws from the Fashion-MNIST train split (labels kept, for the cross-entropy baseline);
    - `digits-ood`: scikit-learn's digits, 8x8 upsampled to 28x28 (bilinear), padded to 32x32 as Fashion-MNIST is,
      grey to RGB: another domain, through the same pipeline (their labels are digits, not garments: dropped);
    - `data-free`: synthesised from `teacher` alone (`data_free`)."""
    if kind == "fmnist":
        ds = fmnist.load("train", num_samples=num_samples, seed=seed)
        return ds.tensors[0], ds.tensors[1]
    if kind == "data-free":
        return data_free(teacher, num_samples, seed, steps=synth_steps), None
    if kind != "digits-ood":
        raise ValueError(kind)
    from sklearn.datasets import load_digits

    images = torch.from_numpy(load_digits().images).float() / 16.0  # (1797, 8, 8) in [0, 1]
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(images), generator=g)[:num_samples].sort().values
    x = torch.nn.functional.interpolate(images[idx].unsqueeze(1), size=(28, 28), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().squeeze(1).to(torch.uint8).numpy()
    return fmnist.to_tensor(np.ascontiguousarray(x)), None


def data_free(teacher: nn.Module, num_samples: int, seed: int, *, steps: int = 200, batch_size: int = 100):
    """Images synthesised from `teacher` alone: noise optimised (Adam, lr 0.1) to match the mean and variance of every
    BatchNorm input to its running statistics, plus cross-entropy towards uniformly drawn classes: DeepInversion (Yin
    et al., CVPR 2020) without its extra regularisers. No real image is used."""
    teacher = teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    losses: list[torch.Tensor] = []

    def hook(module: nn.BatchNorm2d, inputs, _output) -> None:
        x = inputs[0]
        mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
        losses.append(torch.norm(mean - module.running_mean, 2) + torch.norm(var - module.running_var, 2))

    handles = [m.register_forward_hook(hook) for m in teacher.modules() if isinstance(m, nn.BatchNorm2d)]
    g = torch.Generator().manual_seed(seed)
    out = []
    try:
        for start in range(0, num_samples, batch_size):
            n = min(batch_size, num_samples - start)
            x = torch.randn(n, 1, 32, 32, generator=g).requires_grad_(True)
            y = torch.randint(0, teacher.num_classes, (n,), generator=g)
            opt = torch.optim.Adam([x], lr=0.1)
            for _ in range(steps):
                losses.clear()
                loss = torch.nn.functional.cross_entropy(teacher(x.expand(-1, 3, -1, -1)), y) + sum(losses)
                opt.zero_grad()
                loss.backward()
                opt.step()
            logger.info("data-free: %d/%d images, final loss %.3f", start + n, num_samples, loss.item())
            out.append(x.detach().expand(-1, 3, -1, -1).contiguous())
    finally:
        for h in handles:
            h.remove()
    return torch.cat(out)


# ---- teachers -----------------------------------------------------------------------------------------------------
def build(name: str) -> tuple[nn.Module, str]:
    """A small randomly initialised classifier of the recipe for 32x32 inputs, and what it is (for the tables)."""
    if name not in RECIPES:
        raise ValueError(f"unknown family `{name}`; choose from {FAMILIES}")
    description, builder = RECIPES[name]
    return builder(), description


def save_native(model: nn.Module, folder: Path) -> None:
    """A teacher saved for plain timm (its architecture named) or transformers."""
    folder.mkdir(parents=True, exist_ok=True)
    if get_family(model).library_name == "timm":
        source = {"architecture": model.pretrained_cfg.get("architecture")}
        get_family(model).save_pretrained(model, folder, source_config=source)
    else:
        model.save_pretrained(str(folder))


def load_native(folder: Path) -> nn.Module:
    """A teacher folder with plain timm or transformers (a transformers config names its `model_type`)."""
    if "model_type" not in read_json(Path(folder) / "config.json"):
        import timm

        return timm.create_model(f"local-dir:{folder}", pretrained=True)
    from transformers import AutoModelForImageClassification

    return AutoModelForImageClassification.from_pretrained(str(folder))


def committed_teacher(name: str) -> tuple[Path, dict] | None:
    """A teacher trained by `benchmarks/train_teacher.py` and committed under benchmarks/teachers/NAME, if any."""
    folder = TEACHERS / name
    if not (folder / "teacher_metrics.json").exists():
        return None
    m = read_json(folder / "teacher_metrics.json")
    parent = m.get("init_from", {})  # a teacher continued from another (`train_teacher.py --init-from`): both runs
    meta = {"family": m["family"], "model": m["model"], "top1": m["test_top1"]}
    meta.update(train_steps=m["train_steps"] + parent.get("train_steps", 0))
    meta.update(train_seconds=round(m["train_seconds"] + parent.get("train_seconds", 0.0), 1))
    return folder, {**meta, "recipe": m["recipe_details"], "committed": f"benchmarks/teachers/{name}"}


def quick_lr(name: str) -> float:
    """The AdamW rate of a recipe's quick teacher (`train_teacher`): lower for the ViTs trained from scratch."""
    return 1e-3 if "vit" in name else 2e-3


def train_teacher(name: str, *, steps: int, seed: int, folder: Path) -> dict:
    """Train (or reuse) a recipe's quick teacher in `folder` (AdamW, batch 128, cosine, flips and 2-pixel shifts, on
    the 60,000 Fashion-MNIST train images); return its record (top-1, seconds, description)."""
    meta_path = folder / "teacher.json"
    if meta_path.exists():
        return read_json(meta_path)
    train, test = fmnist.load("train"), fmnist.load("test")
    torch.manual_seed(seed)
    model, description = build(name)
    family = get_family(model)
    opt = torch.optim.AdamW(model.parameters(), lr=quick_lr(name), weight_decay=0.05)
    warmup = steps // 20
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup))),
    )
    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(train, batch_size=128, shuffle=True, drop_last=True, generator=g)
    start, step = time.perf_counter(), 0
    model.train()
    while step < steps:
        for x, y in loader:
            flip = torch.rand(len(x), generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()
            x = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
            loss = nn.functional.cross_entropy(as_logits(model(x)), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 100 == 0:
                logger.info("%s teacher: step %d/%d loss %.3f", name, step, steps, loss.item())
            if step == steps:
                break
    model.eval()
    seconds = time.perf_counter() - start
    top1 = evaluate_top1(model, test, batch_size=256, desc=f"eval {name} teacher")
    save_native(model, folder / "teacher")
    meta = {"family": family.name, "model": description, "top1": top1, "train_steps": steps, "train_seconds": seconds}
    write_json(meta_path, meta)
    logger.info("%s teacher: top-1 %.2f%% after %d steps (%.0f s)", name, 100 * top1, steps, seconds)
    return meta


def committed_or_cached_teacher(name: str) -> tuple[nn.Module, dict] | None:
    """A benchmark teacher, loaded in eval mode, and its record, where one exists already (never trained here); None
    when there is none, or when its data is missing (`skipped` says so)."""
    found = find_teacher(name, train_steps=None)
    if found is None or skipped(found[0]):
        return None
    return load_native(found[0]).eval(), found[1]


def find_teacher(
    name: str, *, cache: Path = CACHE / "families", train_steps: int | None = 1500, seed: int = 0
) -> tuple[Path, dict] | None:
    """A benchmark teacher's folder and record, looked up in one order: `resnet34` / `resnet34-fmnist` is the shared
    one (../shared/teachers); another name is committed (benchmarks/teachers/NAME), or a recipe's quick teacher cached
    under `cache`/NAME, trained there first (`train_steps`; None: never). None when there is none."""
    if name in ("resnet34", RESNET34.name):
        metrics = read_json(RESNET34 / "teacher_metrics.json") if (RESNET34 / "config.json").exists() else None
        if metrics is None:
            return None
        # the shared teacher's metrics name its top-1 `test_top1`; every record here says `top1`
        return RESNET34, {"source": f"../shared/teachers/{RESNET34.name}", **metrics, "top1": metrics["test_top1"]}
    found = committed_teacher(name)
    if found is not None or name not in RECIPES:
        return found
    folder = Path(cache) / name
    if train_steps is None and not (folder / "teacher.json").exists():
        return None
    return folder / "teacher", train_teacher(name, steps=train_steps or 0, seed=seed, folder=folder)
