"""The recoverability scan's wall time, and how many adaptor steps its ranking needs (benchmarks/README.md).

python benchmarks/scan_speed.py                          # resnet34-fmnist: full forward vs from the stage
python benchmarks/scan_speed.py --tau 25 50 100 200 1000 # ranking at each step count against the last
python benchmarks/scan_speed.py --teacher timm-vit --replicate benchmarks/results/scan_tau_timm-vit.json --seed 1
python benchmarks/scan_speed.py --summary                # every tau study, with near-ties, in one table
"""

from __future__ import annotations

import time
from pathlib import Path

import harness as h
from teacher_recipes import BY_FAMILY

from hf_practise import ScanConfig, get_family
from hf_practise.backbones.registry import registered_families
from hf_practise.files import atomic_write_text
from hf_practise.forward_cut import CutCache
from hf_practise.latency import LatencyConfig, block_latency_table
from hf_practise.recoverability import score_block, teacher_features


def kendall_tau(a: list[float], b: list[float], tie: float = 0.0) -> float:
    """Kendall's tau-b of two scorings of the same items; with `tie` > 0, two items whose `b` scores differ by less
    than that fraction of the larger count as tied in `b` (a near-tie the reference cannot order either)."""
    n, concordant, discordant, ties_a, ties_b = len(a), 0, 0, 0, 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            if db != 0 and abs(db) < tie * max(abs(b[i]), abs(b[j])):
                db = 0.0
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    denom = ((concordant + discordant + ties_a) * (concordant + discordant + ties_b)) ** 0.5
    return (concordant - discordant) / denom if denom else 1.0


def taus(rows: list[dict], ref_rows: list[dict], key: str = "score", tie: float = 0.0) -> float:
    return kendall_tau([r[key] for r in rows], [r[key] for r in ref_rows], tie=tie)


def cut_cache(teacher, family, images, config: ScanConfig) -> CutCache:
    return CutCache(teacher, family, images, batch_size=config.batch_size, max_bytes=config.stage_cache_mb * 2**20)


def speed(teacher, family, images, targets, config: ScanConfig) -> dict:
    blocks = family.candidates(teacher)
    began = time.perf_counter()
    cuts = cut_cache(teacher, family, images, config)
    for block in blocks:
        cuts.for_block(block)
    setup = time.perf_counter() - began
    rows = []
    for k, block in enumerate(blocks):
        runs = {}
        for way in ("full", "cut") if k % 2 == 0 else ("cut", "full"):
            cut = cuts.for_block(block) if way == "cut" else None
            runs[way] = score_block(teacher, family, block, images, targets, config=config, cut=cut)
        full, fast = runs["full"], runs["cut"]
        row = {"block": block.path, "cut": cuts.for_block(block).cut if cuts.for_block(block) is not None else None}
        row.update(seconds_full=full.seconds, seconds_cut=fast.seconds, recoverability_full=full.recoverability)
        change = abs(fast.recoverability - full.recoverability) / max(full.recoverability, 1e-30)
        rows.append({**row, "recoverability_cut": fast.recoverability, "relative_difference": change})
        print(
            f"{block.path:14s} full {full.seconds:6.1f}s  from {row['cut'] or 'the image':14s} "
            f"{fast.seconds:6.1f}s  recoverability {full.recoverability:.6g} / {fast.recoverability:.6g}",
            flush=True,
        )
    before, after = sum(r["seconds_full"] for r in rows), setup + sum(r["seconds_cut"] for r in rows)
    worst = max(r["relative_difference"] for r in rows)
    return dict(
        rows=rows, setup_seconds=setup, before_seconds=before, after_seconds=after, max_relative_difference=worst
    )


def study_row(row, shares: dict[str, float]) -> dict:
    """What a study keeps of one scanned candidate, with its score under `shares`."""
    share = shares[row.block]
    score = row.recoverability / share if share > 0 else float("inf")
    keep = {"block": row.block, "initial_error": row.initial_error, "recoverability": row.recoverability}
    return {**keep, "trained": row.trained, "share": share, "score": score}


def rescored(rows: list[dict], shares: dict[str, float]) -> list[dict]:
    """A reference's rows with their scores under this run's `shares`."""
    return [{**r, "share": shares[r["block"]], "score": r["recoverability"] / shares[r["block"]]} for r in rows]


def reference_rows(reference: dict, blocks) -> list[dict]:
    old = reference["table"][str(reference["reference"])][:-1]
    if [r["block"] for r in old] != [b.path for b in blocks]:
        raise ValueError("the reference result scanned other candidates: not the same teacher")
    return old


def setup(teacher, family, images, config: ScanConfig):
    """The candidates, their latency shares (measured once) and the cut inputs of a tau or replicate study."""
    blocks, latency = family.candidates(teacher), LatencyConfig(input_size=h.INPUT)
    shares, _ = block_latency_table(teacher, family, blocks, input_size=latency.input_size, config=latency)
    return blocks, shares, cut_cache(teacher, family, images, config)


def tau_study(teacher, family, images, targets, config: ScanConfig, counts: list[int], reference: dict | None) -> dict:
    """The scan at each count of `counts`; the largest count is the reference, unless `reference` (an earlier
    result of this study on the same teacher and scan settings) gives its reference rows: the scan is seeded, so
    they are what a rerun would give, and their scores are recomputed with this run's latency shares."""
    blocks, shares, cuts = setup(teacher, family, images, config)
    table: dict[int, list[dict]] = {}
    if reference is not None:
        ref = reference["reference"]
        seconds = reference["table"][str(ref)][-1]
        table[ref] = rescored(reference_rows(reference, blocks), shares) + [seconds]
        counts = sorted({n for n in counts if n != ref} | {ref})
        print(f"{ref:5d} steps: reused from the reference result ({seconds['seconds']:.1f}s then)", flush=True)
    for n in (n for n in counts if n not in table):
        cfg = ScanConfig(**{**config.__dict__, "iterations": n})
        began = time.perf_counter()
        rows = [score_block(teacher, family, b, images, targets, config=cfg, cut=cuts.for_block(b)) for b in blocks]
        seconds = time.perf_counter() - began
        table[n] = [study_row(r, shares) for r in rows] + [{"seconds": seconds}]
        lowered = sum(r.trained for r in rows)
        print(f"{n:5d} steps: {seconds:7.1f}s, lowered the error on {lowered} of {len(rows)}", flush=True)
    ref_rows = table[counts[-1]][:-1]
    summary = [
        {
            "iterations": n,
            "seconds": table[n][-1]["seconds"],
            "tau_score": taus(table[n][:-1], ref_rows),
            "tau_recoverability": taus(table[n][:-1], ref_rows, "recoverability"),
            "lowered": sum(r["trained"] for r in table[n][:-1]),
            "candidates": len(table[n]) - 1,
        }
        for n in counts
    ]
    return {"reference": counts[-1], "summary": summary, "table": {str(k): v for k, v in table.items()}}


def replicate_study(teacher, family, images, targets, config: ScanConfig, reference: dict, seed: int) -> dict:
    """The reference count of the tau study `reference` once more, its adaptors trained on batches drawn with `seed`,
    and the tau between the two rankings (scores of both recomputed with this run's latency shares)."""
    blocks, shares, cuts = setup(teacher, family, images, config)
    ref, old = reference["reference"], reference_rows(reference, blocks)
    cfg = ScanConfig(**{**config.__dict__, "iterations": ref})
    began = time.perf_counter()
    rows = []
    for b, was in zip(blocks, old):
        r = score_block(teacher, family, b, images, targets, config=cfg, cut=cuts.for_block(b), seed=seed)
        rows.append(study_row(r, shares))
        print(f"{r.block:20s} recoverability {r.recoverability:.6g} (reference seed: {was['recoverability']:.6g})")
    seconds = time.perf_counter() - began
    ref_rows = rescored(old, shares)
    change = max(abs(a["recoverability"] - b["recoverability"]) / b["recoverability"] for a, b in zip(rows, ref_rows))
    return {"reference": ref, "seed": seed, "seconds": seconds, "rows": rows, "reference_rows": ref_rows} | {
        "tau_score": taus(rows, ref_rows),
        "tau_recoverability": taus(rows, ref_rows, "recoverability"),
        "largest_relative_difference": change,
    }


def pair_text(rows: list[dict], ref_rows: list[dict]) -> str:
    """The pairs ordered one way by `rows`' scores and the other by the reference's, with the reference's relative
    gap: `a / b (gap%)`, or "none"."""
    s, ref = {r["block"]: r["score"] for r in rows}, {r["block"]: r["score"] for r in ref_rows}
    order = sorted(ref, key=ref.get)
    pairs = [(a, b) for i, a in enumerate(order) for b in order[i + 1 :] if s[a] > s[b] and ref[b] > 0]
    return ", ".join(f"{a} / {b} ({100 * (1 - ref[a] / ref[b]):.1f}%)" for a, b in pairs) or "none"


def load_reference(parser, path: str, label: str, config: ScanConfig, device: str, *, free: tuple[str, ...]) -> dict:
    """An earlier tau study of this teacher on this device whose scan settings equal `config`'s but for the `free`
    ones (or a clear error naming the file)."""
    reference = h.read_json(path)
    same = {k: v for k, v in reference["scan"].items() if k not in free}
    if (
        reference["teacher"] != label
        or reference.get("device", "cpu") != device
        or same != {k: v for k, v in config.__dict__.items() if k not in free}
    ):
        parser.error(
            f"{path} is a study of another teacher, device or scan settings ({reference['teacher']} on "
            f"{reference.get('device', 'cpu')}, {same}); pass a study of {label} on {device} at these settings, or run "
            "one with --tau"
        )
    return reference


def study_name(doc: dict) -> str:
    """A study's teacher, with the device where it did not run on the CPU (its counts are not pooled with the CPU's)."""
    device = doc.get("device", "cpu")
    return doc["teacher"] if device == "cpu" else f"{doc['teacher']} ({doc['machine'].get('gpu') or device})"


def machine_text(doc: dict) -> str:
    m = doc["machine"]
    text = f"{m['cpu']}, {m['cores']} cores, {m['threads']} torch threads, torch {m['torch']}"
    return text if doc.get("device", "cpu") == "cpu" else f"{text}, scan on {m.get('gpu') or doc['device']}"


def teacher_family(teacher: str):
    """The family class a study's teacher belongs to (the one `teacher_recipes.BY_FAMILY` files its recipe under; the
    shared resnet34 is a timm ResNet), or None."""
    name = teacher.split(" (")[0]  # a study on a GPU is named "TEACHER (GPU)"
    name = "timm-resnet" if name == "resnet34-fmnist" else name
    return next((f for f in registered_families() if name in BY_FAMILY.get(f.name, {}) or f.name == name), None)


def summary(results: Path, tie: float) -> list[str]:
    """Every tau study under `results`, with the near-tie reading; every replicate of a reference (how well two draws
    of the reference agree); and, per adaptor rate, the cheapest step count that reaches 0.9 on each teacher (or the
    reference's own agreement where that is lower), beside the count the teacher's family takes."""
    default_lr = ScanConfig().lr
    lines = [
        "# How many adaptor steps the scan's ranking needs, every teacher",
        "",
        f"From every `scan_tau_*.json` and `scan_replicate_*.json` (`python benchmarks/scan_speed.py --summary`). "
        f"*Near-tie tau*: pairs whose reference scores differ by less than {100 * tie:.0f}% count as tied (the "
        "reference cannot order them either). *Discordant*: pairs the count orders the other way from the reference, "
        f"with the reference's gap. *Rate*: the adaptors' peak rate of the count (default {default_lr:g}); the "
        "reference is always the 1,000-step scan at its own rate.",
        "",
    ]
    best: dict[float, dict[str, dict[int, tuple[float, float]]]] = {}  # rate -> teacher -> steps -> (strict, near-tie)
    machines, found = set(), []
    for path in sorted(results.glob("scan_tau_*.json")):
        doc = h.read_json(path)
        machines.add(machine_text(doc))
        name, lr = study_name(doc), doc["scan"]["lr"]
        ref_rows = doc["table"][str(doc["reference"])][:-1]
        for n, table in doc["table"].items():
            if int(n) != doc["reference"]:
                strict, loose = taus(table[:-1], ref_rows), taus(table[:-1], ref_rows, tie=tie)
                best.setdefault(lr, {}).setdefault(name, {})[int(n)] = (strict, loose)
                seconds = f"{table[-1]['seconds']:.0f} s"
                row = [name, n, f"{lr:g}", seconds, f"{strict:.3f}", f"{loose:.3f}", pair_text(table[:-1], ref_rows)]
                found.append(((name, lr != default_lr, lr, int(n)), [*row, f"`{path.name}`"]))
    head = (
        "teacher | >steps | >rate | >scan wall time | >tau (score) | >near-tie tau | discordant pairs (reference gap)"
    )
    lines += h.table(f"{head} | file", [row for _, row in sorted(found)])  # by teacher, the default rate first, steps
    ceiling: dict[str, tuple[float, float]] = {}
    replicates = []
    for path in sorted(results.glob("scan_replicate_*.json")):
        doc = h.read_json(path)
        machines.add(machine_text(doc))
        name, rows, ref_rows = study_name(doc), doc["rows"], doc["reference_rows"]
        strict, loose = taus(rows, ref_rows), taus(rows, ref_rows, tie=tie)
        low = ceiling.get(name, (1.0, 1.0))
        ceiling[name] = (min(low[0], strict), min(low[1], loose))
        row = [name, doc["reference"], f"0 and {doc['seed']}", f"{doc['seconds']:.0f} s", f"{strict:.3f}"]
        row += [f"{loose:.3f}", pair_text(rows, ref_rows), f"{100 * doc['largest_relative_difference']:.1f}%"]
        replicates.append([*row, f"`{path.name}`"])
    if replicates:
        head = (
            "teacher | >steps | seeds | >wall time | >tau (score) | >near-tie tau | pairs ordered differently (gap in"
        )
        lines += [
            "",
            "The reference drawn twice: the 1,000-step scan again with its adaptors trained on batches drawn with "
            "another seed. A count cannot be asked to agree with one draw of the reference better than another draw "
            "does.",
            "",
            *h.table(f"{head} seed 0) | >largest recoverability change | file", replicates),
        ]
    lines.append("")

    def goal(teacher: str, k: int) -> float:
        """0.9, or the reference's own agreement (a replicate) where that is lower."""
        return min(0.9, ceiling.get(teacher, (1.0, 1.0))[k])

    for lr in sorted(best, key=lambda r: (r != default_lr, r)):
        lines.append(
            f"At rate {lr:g}{' (the default)' if lr == default_lr else ''}, the cheapest step count whose tau reaches "
            "0.9 (near-tie tau in brackets)"
            + (
                ", and the step count its family takes by default (`scan_iterations`: the cheapest count where both "
                "readings reach 0.9):"
                if lr == default_lr
                else ":"
            )
        )
        lines.append("")
        for teacher, per in sorted(best[lr].items()):
            cells = []
            for k in (0, 1):
                enough = [n for n in sorted(per) if per[n][k] >= goal(teacher, k)]
                cells.append(str(enough[0]) if enough else f"none of {', '.join(map(str, sorted(per)))}")
            family = teacher_family(teacher)
            default = f"; {family.name} takes {family.scan_iterations}" if family and lr == default_lr else ""
            lines.append(f"- {teacher}: **{cells[0]}** ({cells[1]}){default}")
        lines.append("")
    if any(goal(t, k) < 0.9 for t in ceiling for k in (0, 1)):
        lines.append(
            "Where two draws of a reference agree less than 0.9, the goal for that teacher is their agreement: "
            + ", ".join(f"{t} {goal(t, 0):.3f} ({goal(t, 1):.3f})" for t in sorted(ceiling))
            + "."
        )
    elif ceiling:
        lines.append(
            f"Both draws of each replicated reference agree to tau >= 0.9 ({', '.join(sorted(ceiling))}): a count "
            "short of 0.9 there is short of the ranking, not of a reference noisier than the goal."
        )
    return lines + [
        "",
        f"Command: `python benchmarks/scan_speed.py --summary --tie {tie:g}`; each study's own command is in its .md; "
        f"they ran on: {'; '.join(sorted(machines))}.",
    ]


def parser():
    p = h.parser(__doc__)
    p.add_argument("--teacher", default="resnet34")
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--tau", type=int, nargs="*", default=None, help="adaptor step counts (the last is the reference)")
    p.add_argument("--device", default="cpu", help="where the teacher and the adaptors run (cpu, cuda, ...)")
    h.folders(p)
    p.add_argument("--suffix", default="", help="appended to the results' file name")
    reuse = "an earlier scan_tau json of this teacher whose largest step count is reused as the reference (not rerun)"
    p.add_argument("--reference-from", default=None, help=reuse)
    again = "an earlier scan_tau json of this teacher: rerun its reference count with the adaptors' batches drawn with "
    p.add_argument("--replicate", default=None, help=again + "--seed, and report the tau between the two")
    lr = "the adaptors' peak rate of the counts (default: ScanConfig's; a --reference-from reference keeps its own)"
    p.add_argument("--lr", type=float, default=None, help=lr)
    p.add_argument("--seed", type=int, default=1, help="batch-order seed of --replicate (the studies use 0)")
    only = "only summarise every scan_tau_*.json under --results into scan_tau_summary.md (no scan)"
    p.add_argument("--summary", action="store_true", help=only)
    p.add_argument("--tie", type=float, default=0.02, help="near-tie tolerance of the summary (relative)")
    return p


def label(args) -> str:
    return "resnet34-fmnist" if args.teacher == "resnet34" else args.teacher


def stem(args) -> Path:
    kind = (
        f"replicate_{label(args)}_seed{args.seed}"
        if args.replicate
        else f"{'tau' if args.tau else 'speed'}_{label(args)}"
    )
    return Path(args.results) / (f"scan_{kind}" + (f"_{args.suffix}" if args.suffix else ""))


def run(p, args) -> dict | None:
    if args.summary:
        lines = summary(Path(args.results), args.tie)
        atomic_write_text(Path(args.results) / "scan_tau_summary.md", "\n".join(lines) + "\n")
        print("\n".join(lines))
        return None
    if h.skipped():
        return None
    found = h.find_teacher(args.teacher)
    if found is None:
        print(f"skipped: no teacher {args.teacher} (../shared/teachers/resnet34-fmnist or benchmarks/teachers/NAME)")
        return None
    teacher = h.load_native(found[0]).eval().to(args.device)
    family = get_family(teacher)
    images = h.tiny_images(args.images)
    config = ScanConfig(**({"lr": args.lr} if args.lr else {}))
    targets = teacher_features(teacher, family, images, batch_size=config.batch_size)
    doc = {"teacher": label(args), "device": args.device, "scan": config.__dict__}
    if args.replicate:
        reference = load_reference(p, args.replicate, label(args), config, args.device, free=("iterations",))
        if args.seed == 0:
            p.error("--seed 0 is the reference's own seed (the scan is seeded): pick another")
        doc["replicate_of"] = args.replicate
        return doc | replicate_study(teacher, family, images, targets, config, reference, args.seed)
    if not args.tau:
        return doc | speed(teacher, family, images, targets, config)
    reference = None
    if args.reference_from:
        # the reference keeps its own rate: a faster rate must match the same ranking
        free = ("iterations", "lr")
        reference = load_reference(p, args.reference_from, label(args), config, args.device, free=free)
        doc["reference_from"] = args.reference_from
        doc["reference_scan"] = reference.get("reference_scan", reference["scan"])
    return doc | tau_study(teacher, family, images, targets, config, sorted(set(args.tau)), reference)


def render(doc: dict) -> list[str]:
    args, label = h.flags(parser(), doc), doc["teacher"]
    if "replicate_of" in doc:
        lines = [
            f"# The scan's reference ranking, drawn twice: {label}",
            "",
            f"{args.images} tiny-set images, scan defaults at {doc['reference']} adaptor steps, the adaptors' batches "
            f"drawn with seed {doc['seed']} here and seed 0 in `{doc['replicate_of']}`.",
            "",
            f"- Kendall tau between the two: **{doc['tau_score']:.3f}** by score, {doc['tau_recoverability']:.3f} by "
            "recoverability.",
            f"- Largest relative difference of a recoverability: {100 * doc['largest_relative_difference']:.1f}%.",
            f"- Pairs the two order differently (gap in the seed-0 reference): "
            f"{pair_text(doc['rows'], doc['reference_rows'])}.",
            f"- Wall time: {doc['seconds']:.0f} s.",
        ]
    elif "summary" in doc:
        lr = doc["scan"]["lr"]
        ref_lr = doc.get("reference_scan", {}).get("lr", lr)
        reused = f"The {doc['reference']}-step reference rows (and their wall time) are reused from `{doc.get('reference_from')}`."
        lines = [
            f"# How many adaptor steps the scan's ranking needs: {label}",
            "",
            f"{args.images} tiny-set images, scan defaults except the steps"
            + (f" and the adaptors' rate ({lr:g})" if args.lr else "")
            + f"; Kendall tau of each ranking against the ranking at {doc['reference']} steps"
            + (f" (at rate {ref_lr:g})" if ref_lr != lr else "")
            + " (by score = recoverability / latency share, shares measured once; "
            "and by recoverability alone). *Lowered*: candidates whose adaptor training lowered the feature error.",
            *([reused] if doc.get("reference_from") else []),
            "",
        ]
        lines += h.table(
            ">adaptor steps | >scan wall time | >tau (score) | >tau (recoverability) | >lowered",
            (
                [s["iterations"], f"{s['seconds']:.0f} s", f"{s['tau_score']:.3f}", f"{s['tau_recoverability']:.3f}"]
                + [f"{s['lowered']} of {s['candidates']}"]
                for s in doc["summary"]
            ),
        )
    else:
        lines = [
            f"# Scan wall time: {label}",
            "",
            f"{len(doc['rows'])} candidates, {args.images} tiny-set images, scan defaults ({doc['scan']['iterations']} "
            f"adaptor steps of batch {doc['scan']['batch_size']}). Each candidate scored back to back both ways, "
            "alternating which goes first.",
            "",
        ]
        lines += h.table(
            "candidate | from | >before (from the image) | >after (from the cut) | >recoverability before | >after",
            (
                [r["block"], r["cut"] or "image", f"{r['seconds_full']:.1f} s", f"{r['seconds_cut']:.1f} s"]
                + [f"{r['recoverability_full']:.6g}", f"{r['recoverability_cut']:.6g}"]
                for r in doc["rows"]
            ),
        )
        lines += [
            "",
            f"Total: **{doc['before_seconds']:.0f} s before, {doc['after_seconds']:.0f} s after** "
            f"({doc['setup_seconds']:.1f} s of it building the cut inputs), "
            f"{100 * (1 - doc['after_seconds'] / doc['before_seconds']):.0f}% less; largest relative difference of "
            f"a recoverability {doc['max_relative_difference']:.1e}.",
        ]
    return lines + ["", f"Command: `{doc['command']}` ({machine_text(doc)})"]


def check(doc: dict) -> str | None:
    worst = doc.get("max_relative_difference", 0.0)
    return f"the two ways' recoverabilities differ by {worst:.1e} (more than 1e-5)" if worst > 1e-5 else None


def main() -> int:
    return h.study(parser(), stem=stem, run=run, paths=("results",), render=render, check=check)


if __name__ == "__main__":
    raise SystemExit(main())
