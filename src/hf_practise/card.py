"""The model card of a compressed model: metadata, measured numbers, plots, how to reproduce and load it.

Rendered from `MODEL_CARD_TEMPLATE.md` with huggingface_hub's `ModelCard` / `ModelCardData`, so the metadata
(base model, license, datasets, model-index with top-1 and latency) is what the Hub expects and parses back.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .result import CompressionResult

logger = logging.getLogger(__name__)

__all__ = ["model_card", "render_model_card", "save_plots", "scan_table", "summary_table", "TEMPLATE_PATH"]

TEMPLATE_PATH = Path(__file__).with_name("MODEL_CARD_TEMPLATE.md")
SCORES_PNG = "block_scores.png"
TOP1_PNG = "top1_vs_latency.png"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _change(before: float, after: float) -> str:
    return f"{100 * (after / before - 1):+.1f}%" if before else "-"


def scan_table(result: CompressionResult) -> str:
    """The scan as a markdown table, in forward order."""
    chosen = {r.block: i + 1 for i, r in enumerate(result.dropped)}
    lines = [
        "| block | initial error | recoverability | latency saving | score | dropped | seconds |",
        "| --- | ---: | ---: | ---: | ---: | :---: | ---: |",
    ]
    retried = 0
    for r in result.scan:
        mark = f"#{chosen[r.block]}" if r.block in chosen else ""
        kept = "" if r.trained else " (identity kept)"
        if r.trained and getattr(r, "retried", 0):
            kept, retried = f" (lr {r.lr:.2g})", retried + 1
        lines.append(
            f"| {r.block} | {r.initial_error:.4g} | {r.recoverability:.4g}{kept} | {100 * r.latency_saving:.1f}% "
            f"| {r.score:.4g} | {mark} | {r.seconds:.1f} |"
        )
    untrained = sum(not r.trained for r in result.scan)
    if retried:
        lines.append(
            f"\n*lr*: on {retried} of {len(result.scan)} candidates adaptor training at the scan's rate raised the "
            "feature error; the row is the retry from identity at the smaller rate shown."
        )
    if untrained:
        lines.append(
            f"\n*identity kept*: on {untrained} of {len(result.scan)} candidates adaptor training raised the feature "
            "error, so the identity adaptors were kept and the recoverability is the initial error."
        )
    return "\n".join(lines)


def summary_table(result: CompressionResult) -> str:
    """Before/after numbers as a markdown table."""
    lat = result.latency

    def top1(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}%"

    rows = [
        "| | teacher | compressed | change |",
        "| --- | ---: | ---: | ---: |",
        f"| latency (ms / batch {lat.base.batch_size}) | {lat.base.median_ms:.2f} | {lat.candidate.median_ms:.2f} "
        f"| -{100 * lat.reduction:.1f}% |",
        f"| MACs / image | {result.macs_before / 1e6:.1f}M | {result.macs_after / 1e6:.1f}M "
        f"| -{100 * (1 - result.macs_after / result.macs_before):.1f}% |",
        f"| params | {result.params_before / 1e6:.2f}M | {result.params_after / 1e6:.2f}M "
        f"| -{100 * (1 - result.params_after / result.params_before):.1f}% |",
        f"| blocks per stage | {result.depths_before} | {result.depths_after} "
        f"| -{sum(result.depths_before) - sum(result.depths_after)} |",
        f"| top-1 | {top1(result.top1_before)} | {top1(result.top1_after)} | "
        + (
            f"{100 * (result.top1_after - result.top1_before):+.2f} pts |"
            if result.top1_before is not None and result.top1_after is not None
            else "- |"
        ),
    ]
    rows += [
        f"| {name} | {before:.4g} | {result.metrics_after.get(name, float('nan')):.4g} | "
        f"{result.metrics_after.get(name, float('nan')) - before:+.4g} |"
        for name, before in result.other_metrics()
    ]
    device = (
        f"{lat.base.device} ({lat.base.device_name}), {lat.base.threads} threads, input {list(lat.base.input_size)}"
    )
    notes = result.latency_notes()
    return (
        "\n".join(rows)
        + f"\n\nLatency measured on {device}, in {lat.base.runtime()}."
        + (f"\n\n{scan_line(result)}" if result.scan else "")
        + "".join(f"\n\n**Note**: {n}" for n in notes)
    )


def _scaled(rows, cfg) -> bool:
    """Whether some candidate's adaptors started below `cfg.lr` because they are wide (`ScanConfig.lr_width`)."""
    return any(r.trained and not r.retried and r.lr < cfg.lr for r in rows)


def scan_line(result: CompressionResult) -> str:
    """The scan in one line: candidates, steps, and how many needed a retry at a smaller rate (or never trained)."""
    rows, cfg = result.scan, result.config.scan
    retried = sum(bool(r.retried) for r in rows)
    untrained = sum(not r.trained for r in rows)
    line = (
        f"Scan: {len(rows)} candidates, {cfg.iterations} adaptor steps each at rate {cfg.lr:g}"
        + (f" ({cfg.lr_width} / width for adaptors wider than {cfg.lr_width})" if _scaled(rows, cfg) else "")
        + f"; {retried} retried at a"
    )
    line += " smaller rate" + (
        f", {untrained} kept identity adaptors (no rate lowered their error)" if untrained else ""
    )
    return line + "."


def model_card(
    result: CompressionResult,
    *,
    repo_id: str | None = None,
    directory: Path | None = None,
    name: str | None = None,
    revision: str | None = None,
):
    """The model card (`huggingface_hub.ModelCard`); its plots are written into `directory` when given; `revision`:
    the Hub branch the model is pushed to, for its load snippet."""
    plots = save_plots(result, directory) if directory is not None else {}
    return render_model_card(result, repo_id=repo_id, name=name, plots=plots, revision=revision)


def save_plots(result: CompressionResult, directory: Path) -> dict[str, str | None]:
    """Write the block-score bar chart and the top-1-vs-latency plot; return their file names (None if not made)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str | None] = {"scores_plot": None, "top1_plot": None}
    dropped = {r.block for r in result.dropped}
    rows = result.scan
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(rows) + 2), 3.6))
    scores = [r.score for r in rows]
    colors = ["tab:red" if r.block in dropped else "tab:gray" for r in rows]
    ax.bar(range(len(rows)), scores, color=colors)
    ax.set_xticks(range(len(rows)), [r.block for r in rows], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("recoverability / latency share")
    ax.set_title("Block scores (red: dropped; lower is dropped first)")
    fig.tight_layout()
    fig.savefig(directory / SCORES_PNG, dpi=110)
    plt.close(fig)
    out["scores_plot"] = SCORES_PNG
    if result.top1_before is not None and result.top1_after is not None:
        lat = result.latency
        fig, ax = plt.subplots(figsize=(4.8, 3.6))
        ax.scatter([lat.base.median_ms], [100 * result.top1_before], s=60, label="base model", marker="o")
        ax.scatter([lat.candidate.median_ms], [100 * result.top1_after], s=60, label="compressed", marker="*")
        ax.set_xlabel(f"latency (ms, batch {lat.base.batch_size}, {lat.base.device})")
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(directory / TOP1_PNG, dpi=110)
        plt.close(fig)
        out["top1_plot"] = TOP1_PNG
    return out


def _removed_fields(result: CompressionResult) -> dict[str, Any]:
    """What was removed, in the card's first sentence: blocks, or (units="branches") attention and MLP branches,
    named in the base model's numbering: the blocks that went whole, and the branches that went alone."""
    n, blocks = len(result.dropped), sum(result.depths_before)
    fields = {"blocks_removed": blocks - sum(result.depths_after), "removed_detail": ""}
    if result.config.units != "branches":
        return {**fields, "removed": f"{n} of its {blocks} residual blocks removed"}
    kinds: dict[str, set[str]] = {}
    for row in result.dropped:
        block, kind = row.block.rsplit(".", 1)
        kinds.setdefault(block, set()).add(kind)
    parts = [f"`{b}` whole" for b, k in kinds.items() if len(k) == 2]
    parts += [f"{'attention' if k == {'attn'} else 'MLP'} of `{b}`" for b, k in kinds.items() if len(k) == 1]
    removed = f"{n} of its {2 * blocks} attention and MLP branches removed"
    return {**fields, "removed": removed, "removed_detail": f" ({', '.join(parts)})"}


def _card_data(result: CompressionResult, repo_id: str | None, name: str):
    from huggingface_hub import ModelCardData

    src = result.source
    lat = result.latency
    hub_id = src.get("hub_id")
    eval_name = result.eval_set.get("name") if result.eval_set else None
    dataset_id = result.tiny_set.hub_id or eval_name or "tiny-set"
    evals = [
        _latency_eval(
            dataset_id,
            lat.candidate.median_ms,
            "latency (ms per batch)",
            {
                "device": lat.base.device,
                "device_name": lat.base.device_name,
                "threads": lat.base.threads,
                "batch_size": lat.base.batch_size,
                "input_size": list(lat.base.input_size),
                "dtype": lat.base.dtype,
                "backend": lat.base.backend,
                "backend_version": str(lat.base.backend_version or lat.base.torch_version),
                "provider": lat.base.provider,
                "base_latency_ms": round(lat.base.median_ms, 3),
                "reduction": round(lat.reduction, 4),
            },
        )
    ]
    if result.top1_after is not None and result.eval_set:
        evals.insert(0, _on_eval_set(result, "accuracy", result.top1_after, "top-1"))
        for i, (metric, _) in enumerate(result.other_metrics()):
            value = result.metrics_after.get(metric)
            if value is not None:
                evals.insert(1 + i, _on_eval_set(result, metric, value, metric.replace("_", " ")))
    evals += _int8_evals(result, dataset_id)
    license_ = (src.get("pretrained_cfg") or {}).get("license") or src.get("license")
    datasets = [d for d in {result.tiny_set.hub_id, (result.eval_set or {}).get("hub_id")} if d]
    return ModelCardData(
        model_name=name,
        base_model=hub_id,
        base_model_relation="finetune" if hub_id else None,
        library_name=result.family.library_name,
        pipeline_tag="image-classification",
        license=license_,
        datasets=sorted(datasets) or None,
        tags=["hf_practise", "practise", "block-pruning", "image-classification", result.family.library_name],
        eval_results=evals,
    )


def _eval_text(result: CompressionResult) -> tuple[str, str]:
    """What top-1 was measured on, and the card's note about it."""
    eval_set = result.eval_set or {}
    if result.top1_after is None:
        return "no labelled eval set (none was given)", "No labelled eval set was given, so top-1 was not measured."
    eval_desc = f"{eval_set.get('num_samples', '?')} images of `{eval_set.get('name', 'the eval set')}`" + (
        f" (split `{eval_set['split']}`)" if eval_set.get("split") else ""
    )
    return eval_desc, f"Top-1 on {eval_desc}."


def _measured(result: CompressionResult, top1_note: str) -> dict[str, Any]:
    """The card's before/after numbers: latency, MACs, params, top-1 and the other eval metrics."""
    lat = result.latency
    return {
        "latency": {
            "batch_size": lat.base.batch_size,
            "base_ms": f"{lat.base.median_ms:.2f}",
            "student_ms": f"{lat.candidate.median_ms:.2f}",
            "change": f"-{100 * lat.reduction:.1f}%",
            "repeats": lat.base.repeats,
            "device": lat.base.device,
            "device_name": lat.base.device_name,
            "threads": lat.base.threads,
            "input_size": "x".join(map(str, lat.base.input_size)),
            "dtype": lat.base.dtype,
            "torch_version": lat.base.torch_version,
            "runtime": lat.base.runtime(),
            "note": " ".join(f"**Note**: {n[0].upper()}{n[1:]}" for n in result.latency_notes()),
        },
        "macs": {
            "before": f"{result.macs_before / 1e6:.1f}M",
            "after": f"{result.macs_after / 1e6:.1f}M",
            "change": _change(result.macs_before, result.macs_after),
        },
        "params": {
            "before": f"{result.params_before / 1e6:.2f}M",
            "after": f"{result.params_after / 1e6:.2f}M",
            "change": _change(result.params_before, result.params_after),
        },
        "top1": {
            "before": _pct(result.top1_before),
            "after": _pct(result.top1_after),
            "change": "-"
            if result.top1_before is None or result.top1_after is None
            else f"{100 * (result.top1_after - result.top1_before):+.2f} pts",
            "note": top1_note,
        },
        "other_metrics": [
            {
                "name": name,
                "before": f"{before:.4g}",
                "after": f"{result.metrics_after.get(name, float('nan')):.4g}",
                "change": f"{result.metrics_after.get(name, float('nan')) - before:+.4g}",
            }
            for name, before in result.other_metrics()
        ],
    }


def render_model_card(
    result: CompressionResult,
    *,
    repo_id: str | None = None,
    name: str | None = None,
    plots: dict[str, Any] | None = None,
    revision: str | None = None,
):
    """The `huggingface_hub.ModelCard` of a compression result, titled `name` (default: the repo's name)."""
    from huggingface_hub import ModelCard

    from .objectives import get_augmentation, get_objective

    plots = plots or {}
    src = result.source
    name = name or (repo_id or "compressed-model").split("/")[-1]
    hub_id = src.get("hub_id")
    base_link = (
        f"[{hub_id}](https://huggingface.co/{hub_id})"
        if hub_id
        else f"`{result.public_source()['name']}` (weights `{src.get('fingerprint')}`)"
    )
    cfg = result.config
    objective = get_objective(cfg.finetune.objective)
    if cfg.blocks is not None:
        target = f"drop the given blocks ({', '.join(cfg.blocks)})"
    elif cfg.num_blocks is not None:
        target = f"drop {cfg.num_blocks} blocks"
    else:
        target = f"{100 * cfg.latency_reduction:.0f}% lower latency"
    eval_desc, top1_note = _eval_text(result)
    native = result.reloads_natively
    load_snippet = result.family.load_snippet(
        repo_id or "path/to/this/folder", hub=repo_id is not None, native=native, revision=revision
    )
    command = result.command or (
        "# Python API\n"
        f"# PractiseCompressor.from_pretrained({result.public_source()['name']!r}, CompressionConfig(...)).compress(...)"
    )
    return ModelCard.from_template(
        _card_data(result, repo_id, name),
        template_path=str(TEMPLATE_PATH),
        model_name=name,
        base_link=base_link,
        library_name=result.family.library_name,
        **_removed_fields(result),
        **_tiny_fields(result),
        depths_before=result.depths_before,
        depths_after=result.depths_after,
        **_measured(result, top1_note),
        scan_table=scan_table(result),
        scan_iterations=cfg.scan.iterations,
        finetune_iterations=cfg.finetune.iterations,
        finetune_batch_size=cfg.finetune.batch_size,
        finetune_optimizer=cfg.finetune.optimizer,
        finetune_lr=cfg.finetune.lr,
        finetune_schedule=cfg.finetune.schedule,
        finetune_objective=objective.card_text.format(t=cfg.finetune.kd_temperature),
        finetune_augmentation=get_augmentation(cfg.finetune.augmentation).card_text,
        classifier="classifier trained with the rest" if objective.trains_classifier else "classifier frozen",
        resume_note=result.resume_note(),
        weights_dtype=result.weights_dtype,
        target=target,
        wall_time=", ".join(f"{k} {v:.0f} s" for k, v in result.phase_seconds.items()),
        command=command,
        load_snippet=load_snippet,
        native=native,
        native_why=result.family.why_not_native(result.model),
        int8=_int8_section(result),
        onnx=_onnx_section(result),
        eval_description=eval_desc,
        **plots,
    )


def _int8_section(result: CompressionResult) -> dict[str, Any] | None:
    """The card's int8 paragraph: the files, how they were made, and the four models side by side."""
    comp = result.int8
    if comp is None:
        return None
    q, stats = comp.compressed, comp.latency["teacher fp32"]
    return {
        "files": "`, `".join(sorted(q.files)),
        "runtime": stats.runtime(),
        "how": (
            "static QDQ, per-channel int8 weights"
            if q.backend == "onnxruntime"
            else "NNCF quantization-aware training on the tiny set, converted by OpenVINO"
            if q.calibration.startswith("quantization-aware")
            else "NNCF post-training"
        ),
        "calibration": q.calibration,
        "check_images": q.check_images,
        "setting": f"batch {stats.batch_size}, threads {stats.threads}, {stats.repeats} rounds, {stats.device_name}",
        "table": comp.table(),
        "depth": f"{comp.depth_speedup_int8:.2f}",
        "total": f"{comp.speedup['compressed int8']:.2f}",
        "float_ops": ", ".join(q.float_ops) or "none",
    }


def _tiny_fields(result: CompressionResult) -> dict[str, Any]:
    tiny = result.tiny_set
    return {
        "tiny_num_samples": tiny.num_samples,
        "tiny_source": tiny.source,
        "tiny_seed": tiny.seed,
        "tiny_labelled": "used" if tiny.labelled else "not needed and not used",
        "tiny_fingerprint": tiny.fingerprint,
        "tiny_indices": tiny.indices_sha256,
    }


def _onnx_section(result: CompressionResult) -> dict[str, Any] | None:
    if result.onnx is None:
        return None
    return {
        **result.onnx.to_dict(),
        "max_abs": f"{result.onnx.max_abs_logit_diff:.2g}",
        "relative": f"{result.onnx.relative_diff:.2g}",
    }


def _int8_evals(result: CompressionResult, dataset_id: str) -> list:
    """The int8 artifact's figures in the model-index: its latency (with the fp32 teacher's, same rounds) and top-1."""

    comp = result.int8
    if comp is None:
        return []
    stats = comp.latency["compressed int8"]
    args = {"artifact": "int8", "backend": comp.backend, "batch_size": stats.batch_size, "threads": stats.threads}
    args.update(base_latency_ms=round(comp.latency["teacher fp32"].median_ms, 3))
    args.update(speedup=round(comp.speedup["compressed int8"], 3), file=", ".join(sorted(comp.compressed.files)))
    evals = [_latency_eval(dataset_id, stats.median_ms, "int8 latency (ms per batch)", args)]
    if "compressed int8" in comp.top1 and result.eval_set:
        top1 = comp.top1["compressed int8"]
        evals.append(_on_eval_set(result, "accuracy", top1, "int8 top-1", {"artifact": "int8", "file": args["file"]}))
    return evals


def _on_eval_set(result: CompressionResult, metric: str, value: float, name: str, args: dict | None = None):
    """A model-index entry measured on the run's eval set."""
    from huggingface_hub import EvalResult

    return EvalResult(
        task_type="image-classification",
        dataset_type=result.eval_set.get("hub_id") or result.eval_set.get("name", "eval"),
        dataset_name=result.eval_set.get("name", "eval"),
        dataset_split=result.eval_set.get("split"),
        metric_type=metric,
        metric_value=round(value, 5),
        metric_name=name,
        metric_args=args,
    )


def _latency_eval(dataset_id: str, ms: float, name: str, args: dict):
    """A model-index latency entry (ms per batch; `args` say how it was timed)."""
    from huggingface_hub import EvalResult

    return EvalResult(
        task_type="image-classification",
        dataset_type=dataset_id,
        dataset_name=dataset_id,
        metric_type="latency_ms",
        metric_value=round(ms, 3),
        metric_name=name,
        metric_args=args,
    )


def point_folder(result: CompressionResult) -> str:
    """The sub-folder of one target of a several-target run: the target, e.g. `0.3`, or the block count, `3-blocks`."""
    cfg = result.config
    return f"{cfg.num_blocks}-blocks" if cfg.num_blocks is not None else f"{cfg.latency_reduction:g}"


def point_label(result: CompressionResult) -> str:
    """A point's target in words: `30%` or `3 blocks`."""
    cfg = result.config
    return f"{cfg.num_blocks} blocks" if cfg.num_blocks is not None else f"{100 * cfg.latency_reduction:.0f}%"


def point_branch(result: CompressionResult) -> str:
    """The Hub branch one target of a several-target run is pushed to, e.g. `latency-0.3`: timm loads a branch
    as `hf-hub:ORG/NAME@BRANCH` and transformers as `from_pretrained(..., revision=BRANCH)`, while neither loads
    a model from a sub-folder of a repo, so each point is also the whole of a branch of its own."""
    return f"latency-{point_folder(result)}" if result.config.num_blocks is None else f"drop-{point_folder(result)}"


def beats(theirs: tuple[float, float], mine: tuple[float, float]) -> bool:
    """Whether a (measured latency reduction, top-1) point beats another: as large a cut or larger and as high a
    top-1 or higher, better in one of the two."""
    return theirs[0] >= mine[0] and theirs[1] >= mine[1] and tuple(theirs) != tuple(mine)


def beaten_by(points: list[CompressionResult]) -> list[CompressionResult | None]:
    """For each point of a several-target run, the point that beats it, if one does: another model with as large a
    measured latency reduction or larger and as high a top-1 or higher, better in one of the two (of several, the
    most accurate). A point beaten is no operating point to choose: the other is as fast and as accurate. Targets
    that chose the same blocks are one model and never beat each other; without a top-1 nothing is beaten."""

    def over(q: CompressionResult, p: CompressionResult) -> bool:
        if q.model is p.model or q.top1_after is None or p.top1_after is None:
            return False
        return beats((q.latency.reduction, q.top1_after), (p.latency.reduction, p.top1_after))

    out = []
    for p in points:
        better = [q for q in points if over(q, p)]
        out.append(max(better, key=lambda q: (q.top1_after, q.latency.reduction)) if better else None)
    return out


def point_row(result: CompressionResult, beaten: CompressionResult | None = None) -> dict[str, Any]:
    """One target of a several-target run, as the top-level card and report list it; `beaten`: the point that beats
    it (`beaten_by`), if any."""
    return {
        "target": result.config.latency_reduction if result.config.num_blocks is None else result.config.num_blocks,
        "target_label": point_label(result),
        "latency_reduction": result.latency.reduction,
        "latency_ms": result.latency.candidate.median_ms,
        "top1": result.top1_after,
        "dropped": [r.block for r in result.dropped],
        "int8_speedup": result.int8.speedup["compressed int8"] if result.int8 is not None else None,
        "beaten_by": point_label(beaten) if beaten is not None else None,
    }


def points_card(result: CompressionResult, directory: Path, repo_id: str | None = None) -> str:
    """The card of a several-target run: every point's measured latency and top-1, its folder, and `pareto.png`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = result.points
    base = points[0].latency.base
    lines = [
        f"# {len(points)} operating points of `{result.public_source()['name']}`",
        "",
        f"One latency table and one recoverability scan on {points[0].tiny_set.num_samples} tiny-set images, then one "
        "selection and one mimic finetune per latency target (a target that chose the blocks of another reuses its "
        f"finetune). Latency: {base.runtime()}, batch {base.batch_size}, {base.device_name}; teacher "
        f"{base.median_ms:.2f} ms" + (f", top-1 {100 * result.top1_before:.2f}%." if result.top1_before else "."),
        "",
        "![top-1 against measured latency reduction](pareto.png)",
        "",
        "| target | measured latency reduction | latency (ms) | top-1 | blocks dropped | choose it? | folder |",
        "|---|---|---|---|---|---|---|",
    ]
    beaten = beaten_by(points)
    for p, by in zip(points, beaten):
        row = point_row(p, by)
        top1 = f"{100 * row['top1']:.2f}%" if row["top1"] is not None else "-"
        choose = f"no: the {row['beaten_by']} point is at least as fast and as accurate" if by is not None else "yes"
        lines.append(
            f"| {row['target_label']} | {100 * row['latency_reduction']:.1f}% | {row['latency_ms']:.2f} | {top1} "
            f"| {len(row['dropped'])} | {choose} | [`{point_folder(p)}/`]({point_folder(p)}/) |"
        )
    lines += ["", "Each folder holds one model with its own card and `practise_report.json`, and reloads on its own."]
    if any(by is not None for by in beaten):
        lines += [
            "A point another one beats (as large a latency reduction or larger, as high a top-1 or higher, on the "
            "evaluation set above) is kept and saved, but is no operating point to choose; the figure draws it hollow."
        ]
    if repo_id is not None:
        lines += [
            "",
            f"On the Hub each point is also the branch `{point_branch(points[0])}` (and so on) of this repo:",
            "",
        ]
        for p in points:
            native = p.reloads_natively
            snippet = p.family.load_snippet(repo_id, hub=True, native=native, revision=point_branch(p))
            lines += [f"- {point_label(p)}:", "", "```python", snippet, "```", ""]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    xs = [100 * p.latency.reduction for p in points]
    ys = [100 * (p.top1_after if p.top1_after is not None else float("nan")) for p in points]
    ax.plot(xs, ys, "-", color="tab:red")
    front = [(x, y) for x, y, by in zip(xs, ys, beaten) if by is None]
    ax.plot(*zip(*front), "o", color="tab:red", label="compressed")
    if len(front) < len(xs):
        out = [(x, y) for x, y, by in zip(xs, ys, beaten) if by is not None]
        ax.plot(*zip(*out), "o", mfc="none", color="tab:red", label="beaten by another point")
    if result.top1_before is not None:
        ax.plot([0], [100 * result.top1_before], "s", color="black", label="teacher")
    ax.set_xlabel("measured latency reduction (%)")
    ax.set_ylabel("top-1 (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(directory / "pareto.png", dpi=120)
    plt.close(fig)
    return "\n".join(lines) + "\n"
