"""Identity-initialised, latency-free adaptors.

An adaptor is a channel-mixing matrix (a 1x1 conv for conv layers, a linear layer for linear layers) placed
right before (`pre`) or right after (`post`) an existing conv/linear layer. It starts as the identity, so the
network is unchanged until it is trained, and it carries no bias, so it folds exactly into the neighbouring
layer's weights: pre gives W·A, post gives A·W (and A·b for a bias). Adaptors are inserted by swapping the
layer for an `AdaptedLayer` wrapper in its parent, and removed by swapping the folded layer back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from .backbones.base import AdaptorSite

__all__ = [
    "AdaptedLayer",
    "make_adaptor",
    "insert_adaptors",
    "fold_adaptors",
    "adaptor_parameters",
    "adapted_layers",
    "adaptor_state",
    "load_adaptor_state",
]


def make_adaptor(layer: nn.Module, side: str) -> nn.Module:
    """An identity-initialised, bias-free adaptor for `layer`'s input (`pre`) or output (`post`) channels."""
    ref = layer.weight
    if isinstance(layer, nn.Conv2d):
        channels = layer.in_channels if side == "pre" else layer.out_channels
        adaptor: nn.Module = nn.Conv2d(
            channels, channels, kernel_size=1, bias=False, device=ref.device, dtype=ref.dtype
        )
        with torch.no_grad():
            adaptor.weight.copy_(torch.eye(channels, device=ref.device, dtype=ref.dtype)[:, :, None, None])
    elif isinstance(layer, nn.Linear):
        channels = layer.in_features if side == "pre" else layer.out_features
        adaptor = nn.Linear(channels, channels, bias=False, device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            adaptor.weight.copy_(torch.eye(channels, device=ref.device, dtype=ref.dtype))
    else:
        raise TypeError(f"Adaptors go next to nn.Conv2d or nn.Linear layers, not {type(layer).__name__}.")
    if side == "pre" and isinstance(layer, nn.Conv2d) and layer.groups != 1:
        raise ValueError(
            f"A pre-adaptor cannot fold into a grouped conv (groups={layer.groups}); the backbone family must"
            " place it before an ungrouped layer."
        )
    return adaptor


class AdaptedLayer(nn.Module):
    """`post(layer(pre(x)))`: a conv/linear layer with optional adaptors on either side."""

    def __init__(self, layer: nn.Module, key: str) -> None:
        super().__init__()
        self.layer = layer
        self.key = key
        self.pre: nn.Module | None = None
        self.post: nn.Module | None = None

    # code that reads a layer's weight (e.g. for its dtype) reads the wrapped layer's
    @property
    def weight(self) -> torch.Tensor:
        return self.layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.layer.bias

    def __getattr__(self, name: str):
        # and its geometry (`stride`, `kernel_size`, `in_features`, ...): some models read it in their forward,
        # e.g. transformers' TensorFlow-style padding of MobileNet convs
        try:
            return super().__getattr__(name)
        except AttributeError:
            layer = self._modules.get("layer")
            if layer is None or name.startswith("_"):
                raise
            return getattr(layer, name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre is not None:
            # in the input's own memory layout: the layer then runs the same kernel (e.g. a GEMM on ResMLP's
            # transposed stream rounds otherwise), so an identity adaptor leaves its output bit for bit; a copy
            # only where the adaptor changed the layout
            y = self.pre(x)
            x = y if y.stride() == x.stride() else torch.empty_like(x, dtype=y.dtype).copy_(y)
        x = self.layer(x)
        if self.post is not None:
            x = self.post(x)
        return x

    def adaptors(self) -> dict[str, nn.Module]:
        return {side: a for side, a in (("pre", self.pre), ("post", self.post)) if a is not None}

    @torch.no_grad()
    def folded(self) -> nn.Module:
        """The wrapped layer with the adaptors multiplied into its weights (exact)."""
        layer = self.layer
        # a conv's weight is [out, in, kh, kw], a linear's [out, in]: the adaptor matrices act on dims 1 and 0
        weight = layer.weight.movedim(1, -1)
        if self.pre is not None:
            weight = weight @ _matrix(self.pre).to(weight.dtype)  # [in, in]
        weight = weight.movedim(-1, 1)
        if self.post is not None:
            a = _matrix(self.post).to(weight.dtype)  # [out, out]
            weight = (a @ weight.flatten(1)).view_as(weight)
            if layer.bias is not None:
                layer.bias.copy_(a @ layer.bias)
        layer.weight.copy_(weight)
        return layer


def _matrix(adaptor: nn.Module) -> torch.Tensor:
    w = adaptor.weight
    return w.reshape(w.shape[0], w.shape[1])


def _parents(model: nn.Module) -> dict[int, tuple[nn.Module, str]]:
    return {id(child): (parent, name) for parent in model.modules() for name, child in parent.named_children()}


def insert_adaptors(model: nn.Module, sites: Sequence[AdaptorSite]) -> dict[tuple[str, str], nn.Module]:
    """Wrap each site's layer in an `AdaptedLayer`, in place; return the adaptors by (layer key, side)."""
    parents = _parents(model)
    wrapped: dict[int, AdaptedLayer] = {}
    out: dict[tuple[str, str], nn.Module] = {}
    for site in sites:
        wrapper = wrapped.get(id(site.module))
        if wrapper is None:
            if id(site.module) not in parents:
                raise ValueError(f"Adaptor site `{site.key}` is not a submodule of the model.")
            parent, name = parents[id(site.module)]
            wrapper = AdaptedLayer(site.module, site.key)
            setattr(parent, name, wrapper)
            wrapped[id(site.module)] = wrapper
        if getattr(wrapper, site.side) is not None:
            continue
        adaptor = make_adaptor(site.module, site.side)
        setattr(wrapper, site.side, adaptor)
        out[(site.key, site.side)] = adaptor
    return out


def adapted_layers(model: nn.Module) -> list[AdaptedLayer]:
    return [m for m in model.modules() if isinstance(m, AdaptedLayer)]


def _unwrap(model: nn.Module, replacement: Callable[[AdaptedLayer], nn.Module]) -> int:
    """Swap every `AdaptedLayer` for `replacement(wrapper)`, in place; return how many adaptors went."""
    parents = _parents(model)
    count = 0
    for wrapper in adapted_layers(model):
        count += len(wrapper.adaptors())
        parent, name = parents[id(wrapper)]
        setattr(parent, name, replacement(wrapper))
    return count


@torch.no_grad()
def fold_adaptors(model: nn.Module) -> int:
    """Fold every adaptor into its layer and put the plain layer back, in place; return how many were folded."""
    return _unwrap(model, AdaptedLayer.folded)


def remove_adaptors(model: nn.Module) -> int:
    """Put every wrapped layer back unchanged, discarding its adaptors, in place; return how many were removed."""
    return _unwrap(model, lambda wrapper: wrapper.layer)


def adaptor_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters of every adaptor in the model."""
    return [p for w in adapted_layers(model) for a in w.adaptors().values() for p in a.parameters()]


def adaptor_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adaptor matrices of a model, keyed `"<layer key>:<side>"`, on the CPU."""
    return {
        f"{w.key}:{side}": a.weight.detach().cpu().clone()
        for w in adapted_layers(model)
        for side, a in w.adaptors().items()
    }


@torch.no_grad()
def load_adaptor_state(model: nn.Module, states: Iterable[dict[str, torch.Tensor]]) -> int:
    """Initialise the model's adaptors from one or more saved states; keys found in several are averaged.

    Returns the number of adaptors that found a saved value (the rest stay at identity).
    """
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    for state in states:
        for key, value in state.items():
            sums[key] = sums.get(key, 0) + value.float()
            counts[key] = counts.get(key, 0) + 1
    loaded = 0
    for w in adapted_layers(model):
        for side, a in w.adaptors().items():
            key = f"{w.key}:{side}"
            if key in sums:
                a.weight.copy_((sums[key] / counts[key]).to(a.weight))
                loaded += 1
    return loaded
