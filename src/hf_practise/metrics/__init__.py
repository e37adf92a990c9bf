"""Eval metrics through `evaluate`, offline: the metric modules shipped in this folder, or any `evaluate` metric.

`load_metric("accuracy")` and `load_metric("top_k_accuracy")` load the modules shipped here (no network, unlike
`evaluate.load("accuracy")`, whose script lives on the Hub). Any other name or path is a Python module that
`evaluate.load` imports and runs (a folder of the current directory, or a script from the Hub), so it is loaded
only with `trust_remote_code=True`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SHIPPED", "check_metrics", "load_metric", "metric_path"]

#: metric modules that ship with hf_practise, by name
SHIPPED = {p.name: p for p in sorted(Path(__file__).parent.iterdir()) if (p / f"{p.name}.py").is_file()}


def metric_path(name: str) -> str:
    """The path `evaluate.load` gets for `name`: a shipped module's folder, else `name` unchanged."""
    return str(SHIPPED[name]) if name in SHIPPED else name


def check_metrics(names: list[str] | tuple[str, ...], *, trust_remote_code: bool = False) -> None:
    """Refuse metrics that are not shipped unless `trust_remote_code`: loading one runs its module's code.

    Raises:
        ValueError: names the first such metric, the shipped ones, and how to allow it.
    """
    foreign = [name for name in names if name not in SHIPPED]
    if foreign and not trust_remote_code:
        raise ValueError(
            f"The eval metric{'s' if len(foreign) > 1 else ''} {', '.join(map(repr, foreign))} "
            f"{'are' if len(foreign) > 1 else 'is'} not shipped with hf_practise (shipped: {', '.join(SHIPPED)}): "
            "loading one imports and runs its module's Python code (a local folder's, or a script from the Hub). Use "
            "a shipped one, or read that code and pass `trust_remote_code=True` (CLI: --trust-remote-code) to run it."
        )


def load_metric(name: str, *, trust_remote_code: bool = False, **kwargs):
    """`evaluate.load` of a shipped metric by name (offline), or, with `trust_remote_code`, of any other `evaluate`
    metric name or path."""
    check_metrics([name], trust_remote_code=trust_remote_code)
    try:
        import evaluate
    except ImportError as e:  # pragma: no cover - a dependency of hf_practise
        raise ImportError("Eval metrics need `evaluate`: pip install evaluate") from e
    try:
        return evaluate.load(metric_path(name), **kwargs)
    except Exception as e:  # noqa: BLE001 - evaluate raises many kinds (FileNotFoundError, ConnectionError, ...)
        raise ValueError(
            f"Could not load the eval metric {name!r}: {e}. Use a shipped one ({', '.join(SHIPPED)}), a local "
            "folder holding an `evaluate` metric module, or a Hub metric name when the Hub can be reached."
        ) from e
