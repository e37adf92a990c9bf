"""Choosing which blocks to drop: the ranked candidates, taken from the front until the target holds.

Both functions work over a `measure` callback (blocks -> `LatencyComparison` of the model with those blocks
simply removed), so they know nothing of models or families: the compressor passes in the feasible candidates
(those a family lets go together) and how to time them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from .backbones.base import BlockRef
from .config import CompressionConfig
from .recoverability import ScanRow

logger = logging.getLogger(__name__)

__all__ = ["check_reachable", "select_in_order"]

Measure = Callable[[Sequence[BlockRef]], Any]


def _unreachable(target: float, n: int, saved: float, how: str) -> ValueError:
    return ValueError(
        f"Latency target {100 * target:.1f}% cannot be reached: dropping all {n} droppable blocks saves "
        f"{100 * saved:.1f}% ({how}). Use a target of at most {max(saved, 0.0):.2f}, or --num-blocks."
    )


def check_reachable(
    feasible: Sequence[BlockRef], shares: dict[str, float], *, config: CompressionConfig, measure: Measure
) -> None:
    """Fail before any training when even dropping every feasible block cannot meet the target.

    Args:
        feasible: the most blocks the family lets go at once (the largest-share ones where a stage limits it).
        shares: each candidate's share of the model's latency.
        config: the target.
        measure: times the model without the given blocks against the whole model.
    """
    if not feasible:
        raise ValueError("There is no block to drop (see the candidates' explanation above).")
    if config.num_blocks is not None:
        if config.num_blocks > len(feasible):
            raise ValueError(
                f"Asked to drop {config.num_blocks} blocks but the model has only {len(feasible)} droppable ones; "
                f"use at most {len(feasible)} (CLI: --num-blocks)."
            )
        return
    target = float(config.latency_reduction)
    predicted = sum(shares[r.path] for r in feasible)
    if config.latency_table is not None:
        if predicted < target:
            raise _unreachable(target, len(feasible), predicted, "by the given latency table")
        return
    if predicted >= target:
        return
    measured = measure(feasible)
    if measured.reduction < target:
        raise _unreachable(target, len(feasible), measured.reduction, f"measured on {measured.base.device}")


#: measurements the back-off may spend coming back toward the target after the greedy pass overshot it
BACKOFF_CHECKS = 6
#: share units of the back-off's knapsack (0.1% of the model's latency)
_UNIT = 1e-3


def _cheapest_sets(
    shares: Sequence[float], costs: Sequence[float], lo: float, hi: float, tried: set[frozenset[int]]
) -> frozenset[int] | None:
    """The subset of items with the lowest total cost whose summed share lies in [lo, hi], skipping `tried`;
    when none does, the subset of smallest summed share above `lo` (the closest to the target from above).

    A knapsack over shares in 0.1% units: for every reachable total, the cheapest subset reaching it.
    """
    best: dict[int, tuple[float, frozenset[int]]] = {0: (0.0, frozenset())}
    for i, (share, cost) in enumerate(zip(shares, costs)):
        w = max(int(round(share / _UNIT)), 0)
        for total, (c, items) in list(best.items()):
            t = total + w
            if t not in best or c + cost < best[t][0]:
                best[t] = (c + cost, items | {i})
    inside = sorted((c, t, items) for t, (c, items) in best.items() if lo - _UNIT / 2 <= t * _UNIT <= hi + _UNIT / 2)
    above = sorted((t, c, items) for t, (c, items) in best.items() if t * _UNIT > hi + _UNIT / 2)
    for items in [items for *_, items in inside] + [items for *_, items in above]:
        if items and items not in tried:
            return items
    return None


def select_in_order(
    ranked: Sequence[ScanRow],
    *,
    config: CompressionConfig,
    measure: Measure,
    cost: Callable[[ScanRow], float] | None = None,
) -> tuple[list[ScanRow], list[dict]]:
    """Take blocks from the front of `ranked` (all feasible together) until the target holds, then come back
    toward it when the measured cut overshoots.

    A block count is taken as it is. A latency target is predicted from the blocks' shares and checked by
    measuring the pruned model (one more block at a time until the measurement meets it); with a latency table
    from the deployment device, its shares are trusted instead. A measured cut above target +
    `config.latency_tolerance` spends accuracy nobody asked for: the back-off then looks for the set of lowest
    total `cost` (default: the blocks' places in `ranked`) whose shares, calibrated by the greedy set's
    measurement, land inside the window, and measures it (up to `BACKOFF_CHECKS` times, narrowing the window
    by each miss). When no set lands inside, the closest measured set above the target is kept and its check
    says so.

    Returns:
        The chosen rows and the latency checks made on the way (blocks, predicted, measured, ...).
    """
    ranked = list(ranked)
    if config.num_blocks is not None:
        if config.num_blocks > len(ranked):
            raise ValueError(
                f"Asked to drop {config.num_blocks} blocks but the model has only {len(ranked)} droppable ones; "
                f"use at most {len(ranked)} (CLI: --num-blocks)."
            )
        return ranked[: config.num_blocks], []
    target = float(config.latency_reduction)
    predicted, k = 0.0, 0
    while k < len(ranked) and predicted < target:
        predicted += ranked[k].latency_saving
        k += 1
    if config.latency_table is not None:
        # the user's table was measured on the deployment device: trust it rather than timing locally
        if predicted < target:
            raise _unreachable(target, len(ranked), predicted, "by the given latency table")
        return ranked[:k], [{"blocks": k, "predicted": predicted, "measured": None}]
    checks: list[dict] = []
    while True:
        chosen = ranked[:k]
        measured = measure([r.ref for r in chosen])
        checks.append(
            {
                "blocks": len(chosen),
                "predicted": predicted,
                "measured": measured.reduction,
                "step": "greedy",
                "dropped": [r.block for r in chosen],
            }
        )
        logger.info(
            "select: %d blocks, predicted %.1f%%, measured %.1f%%", k, 100 * predicted, 100 * measured.reduction
        )
        if measured.reduction >= target:
            break
        if k == len(ranked):
            raise _unreachable(target, k, measured.reduction, f"measured on {measured.base.device}")
        predicted += ranked[k].latency_saving
        k += 1
    upper = target + config.latency_tolerance
    if measured.reduction <= upper:
        return chosen, checks
    return _back_off(ranked, chosen, checks, target=target, upper=upper, measure=measure, cost=cost)


def _back_off(
    ranked: list[ScanRow],
    chosen: list[ScanRow],
    checks: list[dict],
    *,
    target: float,
    upper: float,
    measure: Measure,
    cost: Callable[[ScanRow], float] | None,
) -> tuple[list[ScanRow], list[dict]]:
    """Come back from an overshooting greedy set toward [target, upper] (see `select_in_order`)."""
    costs = [cost(r) if cost is not None else float(i + 1) for i, r in enumerate(ranked)]
    predicted = sum(r.latency_saving for r in chosen)
    # the shares predicted the greedy set's cut this far off; scale them all alike
    scale = checks[-1]["measured"] / predicted if predicted > 0 else 1.0
    shares = [scale * r.latency_saving for r in ranked]
    margin = min(0.01, (upper - target) / 4)
    lo, hi = target + margin, upper - margin
    tried = {frozenset(range(len(chosen)))}
    measured_sets: list[tuple[float, list[ScanRow]]] = [(checks[-1]["measured"], chosen)]
    logger.info(
        "select: %.1f%% overshoots the target %.1f%% by more than %.1f points; coming back toward it",
        100 * checks[-1]["measured"],
        100 * target,
        100 * (upper - target),
    )
    for _ in range(BACKOFF_CHECKS):
        if lo > hi:
            break
        items = _cheapest_sets(shares, costs, lo, hi, tried)
        if items is None:
            break
        tried.add(items)
        subset = [r for i, r in enumerate(ranked) if i in items]
        m = measure([r.ref for r in subset]).reduction
        checks.append(
            {
                "blocks": len(subset),
                "predicted": sum(shares[i] for i in items),
                "measured": m,
                "step": "back-off",
                "dropped": [r.block for r in subset],
            }
        )
        logger.info("select: back-off to %d blocks, measured %.1f%%", len(subset), 100 * m)
        if target <= m <= upper:
            return subset, checks
        measured_sets.append((m, subset))
        if m > upper and min(ms for ms, _ in measured_sets if ms >= target) < m:
            continue  # an above-window fallback no closer than what was measured: try the next
        if m < target:
            lo += target - m + _UNIT
        else:
            hi -= m - upper + _UNIT
    above = [(m, subset) for m, subset in measured_sets if m >= target]
    m, best = min(above, key=lambda t: t[0])
    note = (
        f"no set of candidate blocks measured inside [{100 * target:.1f}%, {100 * upper:.1f}%]: the blocks are "
        f"too coarse for this target here; kept the closest set above it ({100 * m:.1f}%)"
    )
    logger.warning("select: %s", note)
    checks.append(
        {
            "blocks": len(best),
            "predicted": None,
            "measured": m,
            "step": "kept",
            "note": note,
            "dropped": [r.block for r in best],
        }
    )
    return best, checks
