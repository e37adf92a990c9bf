"""Choosing which blocks to drop: the ranked candidates, taken from the front until the target holds.

Both functions work over a `measure` callback (blocks -> `LatencyComparison` of the model with those blocks
simply removed), so they know nothing of models or families: the compressor passes in the feasible candidates
(those a family lets go together) and how to time them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .backbones.base import BlockRef
from .config import CompressionConfig
from .recoverability import ScanRow

logger = logging.getLogger(__name__)

__all__ = ["LatencyTargetUnreachable", "Selection", "SelectionCheck", "check_reachable", "select_in_order"]

Measure = Callable[[Sequence[BlockRef]], Any]


@dataclass(frozen=True)
class SelectionCheck:
    """One step of choosing the blocks: a set of blocks, its predicted and measured latency cut.

    `step` is "greedy" (blocks taken in rank order), "back-off" (a set tried after an overshoot), "kept" (the set
    kept when none landed where asked), "joint" (a set measured to compare with the back-off's by joint
    recoverability), "joint-kept" (the set that comparison kept), "table" (a latency table's shares, not
    measured), "fixed" (blocks given by the user), "final" (the compressed model's own measurement). `reason` says, for "kept" and "final", why the
    result is not where it was asked to be (one of `REASONS`); `note` says it in words for the card.
    """

    step: str
    blocks: int
    predicted: float | None
    measured: float | None
    dropped: list[str] = field(default_factory=list)
    reason: str | None = None
    note: str | None = None

    REASONS = {
        "near_edge": "kept a set inside the window but close to its upper end",
        "too_costly": "the sets inside the window would cost too much recoverability",
        "too_coarse": "no set of blocks measured inside the window",
        "timings_moved": "the final measurement fell short of the one that chose the blocks",
    }

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None or k not in ("reason", "note")}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SelectionCheck:
        known = {"step", "blocks", "predicted", "measured", "dropped", "reason", "note"}
        d = {k: v for k, v in d.items() if k in known}
        return cls(**{"step": "table", "predicted": None, "measured": None, **d})


@dataclass
class Selection:
    """The blocks chosen to drop (scan rows, in the order taken) and the checks that chose them."""

    rows: list[ScanRow]
    checks: list[SelectionCheck]

    @property
    def blocks(self) -> list[str]:
        return [r.block for r in self.rows]

    def __iter__(self) -> Iterator[Any]:
        """`rows, checks = selection`."""
        return iter((self.rows, self.checks))


class LatencyTargetUnreachable(ValueError):
    """The latency target exceeds what dropping every droppable block saves; `reachable` is that saving."""

    def __init__(self, target: float, n: int, saved: float, how: str) -> None:
        super().__init__(
            f"Latency target {100 * target:.1f}% cannot be reached: dropping all {n} droppable blocks saves "
            f"{100 * saved:.1f}% ({how}). Use a target of at most {max(saved, 0.0):.2f}, or --num-blocks."
        )
        self.target, self.reachable = target, max(saved, 0.0)


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
            raise LatencyTargetUnreachable(target, len(feasible), predicted, "by the given latency table")
        return
    if predicted >= target:
        return
    measured = measure(feasible)
    if measured.reduction < target:
        raise LatencyTargetUnreachable(target, len(feasible), measured.reduction, f"measured on {measured.base.device}")


#: measurements the back-off may spend coming back toward the target after the greedy pass overshot it
BACKOFF_CHECKS = 6
#: the back-off trades latency overshoot for accuracy: a set inside the window whose total cost (recoverability)
#: is more than this many times the overshooting greedy set's is not taken (e.g. one hard-to-recover big block
#: instead of two easy ones: measured on a Swin teacher, 3 points of top-1 for 9 points of latency)
BACKOFF_COST_FACTOR = 2.0
#: share units of the back-off's knapsack (0.1% of the model's latency)
_UNIT = 1e-3


def _cheapest_by_total(shares: Sequence[float], costs: Sequence[float]) -> dict[int, tuple[float, frozenset[int]]]:
    """A knapsack over shares in 0.1% units: for every reachable total, the cheapest subset reaching it."""
    best: dict[int, tuple[float, frozenset[int]]] = {0: (0.0, frozenset())}
    for i, (share, cost) in enumerate(zip(shares, costs)):
        w = max(int(round(share / _UNIT)), 0)
        for total, (c, items) in list(best.items()):
            t = total + w
            if t not in best or c + cost < best[t][0]:
                best[t] = (c + cost, items | {i})
    return best


def _block_savings(shares: Sequence[float], measured: Sequence[tuple[frozenset[int], float]]) -> list[float]:
    """What removing each block saves, fitted to the measured sets: a ridge regression of each set's measured cut
    on its blocks, pulled toward the blocks' shares (prior spread: the share itself, plus 0.5 points). Removing
    several blocks together can save more or less than their shares say, and a few measurements tell which."""
    n = len(shares)
    prior = torch.tensor(shares, dtype=torch.float64)
    if not measured:
        return prior.tolist()
    x = torch.zeros(len(measured), n, dtype=torch.float64)
    for row, (items, _) in enumerate(measured):
        x[row, list(items)] = 1.0
    m = torch.tensor([v for _, v in measured], dtype=torch.float64)
    noise = 0.01**2  # a measured cut is good to about a point
    spread = (prior.abs() + 0.005) ** 2
    a = x.T @ x / noise + torch.diag(1.0 / spread)
    w = prior + torch.linalg.solve(a, x.T @ (m - x @ prior) / noise)
    return w.clamp_min(0.0).tolist()


def select_in_order(
    ranked: Sequence[ScanRow],
    *,
    config: CompressionConfig,
    measure: Measure,
    cost: Callable[[ScanRow], float] | None = None,
    joint: Callable[[Sequence[ScanRow]], float] | None = None,
) -> Selection:
    """Take blocks from the front of `ranked` (all feasible together) until the target holds, then come back
    toward it when the measured cut overshoots.

    A block count is taken as it is. A latency target is predicted from the blocks' shares and checked by
    measuring the pruned model (one more block at a time until the measurement meets it); with a latency table
    from the deployment device, its shares are trusted instead. A measured cut above target +
    `config.latency_tolerance` spends accuracy nobody asked for: the back-off then looks for the set of lowest
    total `cost` (default: the blocks' places in `ranked`) whose shares, calibrated by the greedy set's
    measurement, land inside the window, and measures it (up to `BACKOFF_CHECKS` times, narrowing the window
    by each miss). When no set lands inside, the closest measured set above the target is kept and its check
    says so. With `joint` (a set's recoverability with its blocks dropped together), the set the back-off found
    inside the window is compared with the cheapest sets holding the blocks it left out (`_joint_choice`).

    Returns:
        The chosen rows and the latency checks made on the way.
    """
    ranked = list(ranked)
    if config.num_blocks is not None:
        if config.num_blocks > len(ranked):
            raise ValueError(
                f"Asked to drop {config.num_blocks} blocks but the model has only {len(ranked)} droppable ones; "
                f"use at most {len(ranked)} (CLI: --num-blocks)."
            )
        return Selection(ranked[: config.num_blocks], [])
    target = float(config.latency_reduction)
    predicted, k = 0.0, 0
    while k < len(ranked) and predicted < target:
        predicted += ranked[k].latency_saving
        k += 1
    if config.latency_table is not None:
        # the user's table was measured on the deployment device: trust it rather than timing locally
        if predicted < target:
            raise LatencyTargetUnreachable(target, len(ranked), predicted, "by the given latency table")
        return Selection(ranked[:k], [SelectionCheck("table", k, predicted, None, [r.block for r in ranked[:k]])])
    checks: list[SelectionCheck] = []
    while True:
        chosen = ranked[:k]
        measured = measure([r.ref for r in chosen])
        checks.append(SelectionCheck("greedy", len(chosen), predicted, measured.reduction, [r.block for r in chosen]))
        logger.info(
            "select: %d blocks, predicted %.1f%%, measured %.1f%%", k, 100 * predicted, 100 * measured.reduction
        )
        if measured.reduction >= target:
            break
        if k == len(ranked):
            raise LatencyTargetUnreachable(target, k, measured.reduction, f"measured on {measured.base.device}")
        predicted += ranked[k].latency_saving
        k += 1
    upper = target + config.latency_tolerance
    # a cut within a point of the window's upper end is one re-measurement away from leaving it: look for a
    # more central set too (kept when there is none)
    if measured.reduction <= upper - _edge(target, upper):
        return Selection(chosen, checks)
    return _back_off(ranked, chosen, checks, target=target, upper=upper, measure=measure, cost=cost, joint=joint)


def _subset(ranked: Sequence[ScanRow], items: frozenset[int]) -> list[ScanRow]:
    """The rows of `ranked` at the indices `items`, in ranked order."""
    return [r for i, r in enumerate(ranked) if i in items]


def _edge(target: float, upper: float) -> float:
    """How close to the window's upper end a measured cut is too close: a point, or a quarter of a narrow window."""
    return min(0.01, (upper - target) / 4)


def _back_off(
    ranked: list[ScanRow],
    chosen: list[ScanRow],
    checks: list[SelectionCheck],
    *,
    target: float,
    upper: float,
    measure: Measure,
    cost: Callable[[ScanRow], float] | None,
    joint: Callable[[Sequence[ScanRow]], float] | None = None,
) -> Selection:
    """Come back from an overshooting greedy set toward [target, upper] (see `select_in_order`).

    Each try takes the cheapest set whose expected cut lies in the window, the blocks' savings fitted to every
    set measured so far (`_block_savings`); when no set is expected inside, the one expected closest above the
    target. Every measurement refines the fit.
    """
    costs = [cost(r) if cost is not None else float(i + 1) for i, r in enumerate(ranked)]
    shares = [r.latency_saving for r in ranked]
    margin = _edge(target, upper)
    greedy = frozenset(range(len(chosen)))
    budget = BACKOFF_COST_FACTOR * sum(costs[i] for i in greedy)
    too_costly = False
    measured: list[tuple[frozenset[int], float]] = [(greedy, checks[-1].measured)]
    logger.info(
        "select: %.1f%% is above or at the edge of [%.1f%%, %.1f%%]; looking for a set closer to the target",
        100 * checks[-1].measured,
        100 * target,
        100 * upper,
    )
    for _ in range(BACKOFF_CHECKS):
        savings = _block_savings(shares, measured)
        tried = {items for items, _ in measured}
        options = [
            (t * _UNIT, c, items) for t, (c, items) in _cheapest_by_total(savings, costs).items() if items not in tried
        ]
        affordable = [o for o in options if o[1] <= budget]
        too_costly = too_costly or any(
            items and target + margin <= e <= upper - margin for e, c, items in options if c > budget
        )
        options = affordable
        inside = [(c, e, items) for e, c, items in options if items and target + margin <= e <= upper - margin]
        above = [(e, c, items) for e, c, items in options if items and e >= target + margin]
        closest = min((m for _, m in measured if m >= target), default=float("inf"))
        if inside:
            _, e, items = min(inside, key=lambda o: (o[0], o[1]))
        elif above and min(above, key=lambda o: (o[0], o[1]))[0] < closest - margin:
            # (a set only expected within the timings' noise of one already measured is not worth its cost)
            e, _, items = min(above, key=lambda o: (o[0], o[1]))
        else:
            break
        subset = _subset(ranked, items)
        m = measure([r.ref for r in subset]).reduction
        measured.append((items, m))
        checks.append(SelectionCheck("back-off", len(subset), e, m, [r.block for r in subset]))
        logger.info("select: back-off to %d blocks, expected %.1f%%, measured %.1f%%", len(subset), 100 * e, 100 * m)
        if target <= m <= upper - margin:
            if joint is None:
                return Selection(subset, checks)
            window = (target, upper, margin)
            return _joint_choice(ranked, greedy, items, measured, shares, costs, window, measure, joint, checks)
    # the closest measured set above the target; sets measured within the noise of it (`margin`) count as level
    # with it, and the cheapest of those is kept: a costlier set is no better for a cut a re-measurement can undo
    met = [(m, items) for items, m in measured if m >= target]
    closest = min(m for m, _ in met)
    m, items = min(
        ((m, items) for m, items in met if m <= closest + margin), key=lambda t: (sum(costs[i] for i in t[1]), t[0])
    )
    kept = _subset(ranked, items)
    reason, note = _kept_reason(m, target, upper, margin, too_costly)
    logger.warning("select: %s", note)
    checks.append(SelectionCheck("kept", len(kept), None, m, [r.block for r in kept], reason=reason, note=note))
    return Selection(kept, checks)


#: with a joint set cost, the blocks of the overshooting set (largest saving first) whose cheapest set inside the
#: window is measured beside the back-off's: each costs a latency measurement and, inside, an adaptor training
JOINT_ALTERNATIVES = 3


def _cheapest_with(
    savings: Sequence[float], costs: Sequence[float], forced: int
) -> dict[int, tuple[float, frozenset[int]]]:
    """`_cheapest_by_total` over the subsets that hold block `forced`."""
    others = [i for i in range(len(savings)) if i != forced]
    best = _cheapest_by_total([savings[i] for i in others], [costs[i] for i in others])
    w = max(int(round(savings[forced] / _UNIT)), 0)
    return {
        total + w: (c + costs[forced], frozenset(others[j] for j in items) | {forced})
        for total, (c, items) in best.items()
    }


def _joint_choice(
    ranked: list[ScanRow],
    greedy: frozenset[int],
    found: frozenset[int],
    measured: list[tuple[frozenset[int], float]],
    shares: Sequence[float],
    costs: Sequence[float],
    window: tuple[float, float, float],
    measure: Measure,
    joint: Callable[[Sequence[ScanRow]], float],
    checks: list[SelectionCheck],
) -> Selection:
    """The set `found` inside the window, or one that recovers better with its blocks dropped together.

    Adding the blocks' own recoverabilities misjudges sets: many small blocks can cost far more together than their
    sum, a big block with a few others less (measured on the ConvNeXt teachers, `benchmarks/joint_recoverability.py`).
    So for each block the overshooting greedy set dropped and `found` does not (the `JOINT_ALTERNATIVES` with the
    largest saving), the cheapest set holding it expected inside the window is measured; of the sets measured inside,
    the one whose blocks dropped together leave the least feature error is kept. The joint error judges the sets
    directly, so the back-off's budget on the summed cost (`BACKOFF_COST_FACTOR`) does not apply to them. The checks
    end with a "joint-kept" one whenever a set was measured for the comparison.
    """
    target, upper, margin = window
    savings = _block_savings(shares, measured)  # fitted to every set measured so far, `found` included
    rows = lambda items: _subset(ranked, items)  # noqa: E731
    inside = {found: dict(measured)[found]}
    tried = {items for items, _ in measured}
    for block in sorted(greedy - found, key=lambda i: -savings[i])[:JOINT_ALTERNATIVES]:
        options = [
            (c, t * _UNIT, items)
            for t, (c, items) in _cheapest_with(savings, costs, block).items()
            if target + margin <= t * _UNIT <= upper - margin and items not in tried
        ]
        if not options:
            continue
        _, e, items = min(options, key=lambda o: (o[0], o[1]))
        m = measure([r.ref for r in rows(items)]).reduction
        tried.add(items)
        measured.append((items, m))
        savings = _block_savings(shares, measured)
        checks.append(SelectionCheck("joint", len(items), e, m, [r.block for r in rows(items)]))
        logger.info("select: a set with %s, expected %.1f%%, measured %.1f%%", ranked[block].block, 100 * e, 100 * m)
        if target <= m <= upper - margin:
            inside[items] = m
    if len(inside) == 1:
        if checks[-1].step != "joint":  # nothing else was expected inside: nothing to compare
            return Selection(rows(found), checks)
        best, note = found, "no other set measured inside the window: kept the back-off's set"
    else:
        errors = {items: joint(rows(items)) for items in inside}
        best = min(errors, key=lambda items: errors[items])
        others = ", ".join(f"{errors[i]:.4g}" for i in errors if i != best)
        note = (
            f"of {len(inside)} sets measured inside [{100 * target:.1f}%, {100 * upper:.1f}%], kept the one whose "
            f"blocks dropped together recover best: feature error {errors[best]:.4g} (the others {others})"
        )
    logger.info("select: %s", note)
    checks.append(SelectionCheck("joint-kept", len(best), None, inside[best], [r.block for r in rows(best)], note=note))
    return Selection(rows(best), checks)


def _kept_reason(m: float, target: float, upper: float, margin: float, too_costly: bool) -> tuple[str, str]:
    """Why the back-off kept a set measured at `m`: a `SelectionCheck.REASONS` code and the card's sentence."""
    if m <= upper:
        reason, note = (
            "near_edge",
            (
                f"kept a set measured at {100 * m:.1f}%, inside [{100 * target:.1f}%, {100 * upper:.1f}%] but within "
                f"{100 * margin:.0f} point(s) of its upper end: no set measured closer to the target (the blocks are too "
                "coarse for this target here, or the timings too noisy), so a re-measurement may land just above it"
            ),
        )
    elif too_costly:
        reason, note = (
            "too_costly",
            (
                f"the sets of candidate blocks expected inside [{100 * target:.1f}%, {100 * upper:.1f}%] would cost more "
                f"than {BACKOFF_COST_FACTOR:g} times the recoverability of the greedy set; kept the closest set above it "
                f"({100 * m:.1f}%): the extra latency cut is cheaper in accuracy than landing on the target"
            ),
        )
    else:
        reason, note = (
            "too_coarse",
            (
                f"no set of candidate blocks measured inside [{100 * target:.1f}%, {100 * upper:.1f}%]: the blocks are "
                f"too coarse for this target here, or the timings too noisy; kept the closest set above it ({100 * m:.1f}%)"
            ),
        )
    return reason, note
