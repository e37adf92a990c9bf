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


def select_in_order(
    ranked: Sequence[ScanRow], *, config: CompressionConfig, measure: Measure
) -> tuple[list[ScanRow], list[dict]]:
    """Take blocks from the front of `ranked` (all feasible together) until the target holds.

    A block count is taken as it is. A latency target is predicted from the blocks' shares and checked by
    measuring the pruned model (one more block at a time until the measurement meets it); with a latency table
    from the deployment device, its shares are trusted instead.

    Returns:
        The chosen rows and the latency checks made on the way (blocks, predicted, measured).
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
        checks.append({"blocks": len(chosen), "predicted": predicted, "measured": measured.reduction})
        logger.info(
            "select: %d blocks, predicted %.1f%%, measured %.1f%%", k, 100 * predicted, 100 * measured.reduction
        )
        if measured.reduction >= target:
            return chosen, checks
        if k == len(ranked):
            raise _unreachable(target, k, measured.reduction, f"measured on {measured.base.device}")
        predicted += ranked[k].latency_saving
        k += 1
