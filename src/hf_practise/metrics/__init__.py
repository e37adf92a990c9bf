"""Eval metrics through `evaluate`, offline: the metric modules shipped in this folder, or any `evaluate` metric.

`load_metric("accuracy")` and `load_metric("top_k_accuracy")` load the modules shipped here (no network, unlike
`evaluate.load("accuracy")`, whose script lives on the Hub); any other name or path goes to `evaluate.load` as
it is (a Hub metric needs the network, a local metric folder does not).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SHIPPED", "load_metric", "metric_path"]

#: metric modules that ship with hf_practise, by name
SHIPPED = {p.name: p for p in sorted(Path(__file__).parent.iterdir()) if (p / f"{p.name}.py").is_file()}


def metric_path(name: str) -> str:
    """The path `evaluate.load` gets for `name`: a shipped module's folder, else `name` unchanged."""
    return str(SHIPPED[name]) if name in SHIPPED else name


def load_metric(name: str, **kwargs):
    """`evaluate.load` of a shipped metric by name (offline), or of any other `evaluate` metric name or path."""
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
