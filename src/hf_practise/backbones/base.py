"""What a backbone family must answer for PRACTISE.

The algorithm (scan, adaptors, mimic finetune) never knows which family it works on. A family says how the
network is cut into stages of residual blocks, which layers open and close each block's residual branches
(where adaptors go), how to get pre-pooling features, how to remove blocks for good, and how to save the
result so that the family's own library reloads it.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn


def layers_of(module: nn.Module | None, kinds: type | tuple[type, ...]) -> list[nn.Module]:
    """The submodules of `module` (itself included) that are `kinds`, in registration order; none for None."""
    return [] if module is None else [m for m in module.modules() if isinstance(m, kinds)]


def layers_outside(module: nn.Module, kinds: type | tuple[type, ...], *excluded: nn.Module | None) -> list[nn.Module]:
    """The `kinds` layers of `module` (as `layers_of`) that are in none of the `excluded` submodules (e.g. a
    block's branch convs: its convs less those of its shortcut)."""
    skip = {id(m) for part in excluded if part is not None for m in part.modules()}
    return [m for m in layers_of(module, kinds) if id(m) not in skip]


@torch.no_grad()
def folds_exactly(layer: nn.Module) -> bool:
    """Whether an adaptor multiplied into `layer`'s weight is exact: its output must be linear in its weight.

    A weight-standardised conv (BiT's `StdConv2d`, transformers' `WeightStandardizedConv2d`) renormalises its
    filters in every forward, so a channel mix folded into them would not survive; no adaptor goes there. Checked
    by running the layer with its weight doubled (bias zero): a layer linear in its weight doubles its output.
    """
    if not isinstance(layer, (nn.Conv2d, nn.Linear)) or type(layer).forward in (nn.Conv2d.forward, nn.Linear.forward):
        return isinstance(layer, (nn.Conv2d, nn.Linear))
    from torch.func import functional_call

    w = layer.weight
    g = torch.Generator(device=w.device).manual_seed(0)
    if isinstance(layer, nn.Conv2d):
        side = 2 * max(layer.kernel_size) * max(layer.dilation) + max(layer.stride)
        x = torch.randn(1, layer.in_channels, side, side, generator=g, device=w.device, dtype=w.dtype)
    else:
        x = torch.randn(1, layer.in_features, generator=g, device=w.device, dtype=w.dtype)
    params = {} if layer.bias is None else {"bias": torch.zeros_like(layer.bias)}
    once = functional_call(layer, {**params, "weight": w}, (x,))
    twice = functional_call(layer, {**params, "weight": 2 * w}, (x,))
    return bool(torch.allclose(twice, 2 * once, rtol=1e-4, atol=1e-5 * float(once.abs().max()) + 1e-12))


def ungrouped(module: nn.Module | None) -> list[nn.Module]:
    """The conv/linear layers of `module` a channel-mixing adaptor can fold into (no grouped or depthwise convs)."""
    return [m for m in layers_of(module, (nn.Conv2d, nn.Linear)) if getattr(m, "groups", 1) == 1]


class BlockGroup(nn.Module):
    """Consecutive blocks that a family offers as one candidate (e.g. a Swin (regular, shifted) pair, whose
    drop keeps every later block's window shift). A view: the blocks stay where they are in the model, and
    calling the group runs them in turn (extra arguments go to each)."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    @property
    def output_module(self) -> nn.Module:
        """The module of the model whose output is this group's (the group itself never runs in the model)."""
        return self.blocks[-1]

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        for block in self.blocks:
            out = block(x, *args, **kwargs)
            x = out[0] if isinstance(out, tuple) else out
        return x


def unit_blocks(unit: nn.Module) -> list[nn.Module]:
    """The blocks of a candidate: a group's (`BlockGroup`), or the candidate itself (a block, a branch unit)."""
    return list(unit.blocks) if isinstance(unit, BlockGroup) else [unit]


def parity_units(blocks: Sequence[nn.Module]) -> list[BlockGroup]:
    """Consecutive pairs of `blocks`, and the trailing one when their number is odd: the candidates of a stage
    whose blocks alternate by index parity (Swin's regular / shifted windows), so that dropping any of them
    leaves every later block at an index of the same parity."""
    blocks = list(blocks)
    return [BlockGroup(blocks[i : i + 2]) for i in range(0, len(blocks), 2)]


def unit_refs(model: nn.Module, stages: Sequence[Sequence[BlockGroup]]) -> list[BlockRef]:
    """BlockRefs of `parity_units`, named after their blocks: "layers.2.blocks.0+1" is blocks 0 and 1."""
    names = {id(m): n for n, m in model.named_modules()}
    refs = []
    for s, units in enumerate(stages):
        for i, unit in enumerate(units):
            path = names[id(unit.blocks[0])]
            if len(unit.blocks) > 1:
                path += f"+{int(path.rsplit('.', 1)[1]) + 1}"
            refs.append(BlockRef(stage=s, index=i, path=path))
    return refs


def rebuild_stage(model: nn.Module, stage: nn.Module, kept: Sequence[nn.Module]) -> None:
    """Put a container of the same type holding only `kept` where `stage` is in `model`, so state-dict keys
    renumber as the family's library numbers a shallower model."""
    parent, name = next((p, n) for p in model.modules() for n, child in p.named_children() if child is stage)
    setattr(parent, name, nn.Sequential(*kept) if isinstance(stage, nn.Sequential) else nn.ModuleList(kept))


def entry_module(block: nn.Module) -> nn.Module:
    """The module whose input is a block's input (the first block of a group, a branch unit's pre-norm)."""
    if isinstance(block, BlockGroup):
        return block.blocks[0]
    return block.entry if isinstance(getattr(type(block), "entry", None), property) else block


@dataclass(frozen=True)
class BlockRef:
    """A residual block, by position: block `index` of stage `stage` in the original network.

    Positions stay valid on copies of the model; `path` is its dotted name, for logs and cards only.
    """

    stage: int
    index: int
    path: str


@dataclass(frozen=True)
class AdaptorSite:
    """A layer that gets an adaptor: `pre` multiplies its input, `post` its output, channel-wise."""

    module: nn.Module
    side: Literal["pre", "post"]
    key: str  # the layer's dotted name in the unpruned network: matches sites across copies


#: the attribute of a block-dropped model that lists its removals, one list of (stage, index, path) per drop,
#: each in the indices of the model as it was then: what `hf_practise.load_compressed` replays
REMOVED_ATTR = "hf_practise_removed_blocks"


def record_removed(model: nn.Module, blocks: Sequence[BlockRef]) -> None:
    rounds = list(getattr(model, REMOVED_ATTR, []))
    rounds.append([[r.stage, r.index, r.path] for r in sorted(blocks, key=lambda r: (r.stage, r.index))])
    object.__setattr__(model, REMOVED_ATTR, rounds)


class BackboneFamily(abc.ABC):
    """Base class of a family adapter. Subclasses are registered with `register_family`."""

    #: short name shown in errors and cards
    name: str = "base"
    #: library that reloads a saved model natively ("timm" or "transformers")
    library_name: str = "timm"
    #: whether the family's own library rebuilds a block-dropped model from its saved config; when False the
    #: model is saved in hf_practise's documented format (the original architecture plus the removed blocks) and
    #: reloads with `hf_practise.load_compressed`
    native_reload: bool = True
    #: why the family's library cannot rebuild a block-dropped model from its config, where it cannot (the model
    #: card and the load snippet give it; see `why_not_native`)
    native_reload_why: str = "its config cannot express the shallower stages"
    #: blocks every stage keeps (1 where the family's library cannot build an empty stage, or where a model
    #: without blocks would ignore its input, like a ViT reading its class token)
    min_blocks_per_stage: int = 0
    #: optimizer of the mimic finetune when `FinetuneConfig.optimizer` is "auto": SGD suits BatchNorm networks,
    #: AdamW the LayerNorm ones (SGD at 0.01 pushes a ConvNeXt below the same blocks simply removed)
    finetune_optimizer: str = "sgd"
    #: adaptor steps per candidate of the scan when `ScanConfig.iterations` is None: the fewest whose ranking
    #: matched the 1,000-step ranking to Kendall tau 0.9 on this family's benchmark teacher (resnet34: 0.974 at 100;
    #: benchmarks/results/scan_tau_summary.md); families not measured take 100
    scan_iterations: int = 100
    #: tiny random models that the shared invariant suite tests this family on: variant -> builder(seed)
    #: (see `hf_practise.backbones.tiny`); a registered family without any fails that suite
    tiny_models: ClassVar[dict[str, Any]] = {}
    #: what a candidate is: "blocks" (residual blocks, or a family's groups of them), or "branches" (a transformer
    #: block's attention and MLP apart, where the family offers them: `offers_branches`); see `with_units`
    units: str = "blocks"

    @classmethod
    @abc.abstractmethod
    def matches(cls, model: nn.Module) -> bool:
        """Whether this family handles `model` (checked on classes, never on names)."""

    @classmethod
    def model_type(cls) -> type | None:
        """The model class this family is written for, when it names one: where several families match a model,
        `get_family` takes the one whose class comes first in the model's MRO (the most specific)."""
        return None

    @classmethod
    def for_model(cls, model: nn.Module) -> BackboneFamily:
        """The adapter for `model` (which `matches`): a plain instance, unless the family depends on the model
        (e.g. a wrapper family that delegates to the family of the wrapped model)."""
        return cls()

    def offers_branches(self, model: nn.Module) -> bool:
        """Whether this family can offer `model`'s attention and MLP branches as candidates of their own."""
        return False

    def with_units(self, units: str, model: nn.Module) -> BackboneFamily:
        """This adapter with candidates of kind `units` ("blocks" or "branches") for `model`, or a clear error where
        the family has no such unit."""
        if units == self.units:
            return self
        if units not in ("blocks", "branches"):
            raise ValueError(f"`units` must be 'blocks' or 'branches'; got {units!r}.")
        if units == "branches" and not self.offers_branches(model):
            raise ValueError(
                f"The {self.name} family does not offer attention and MLP branches as candidates for this model "
                "(they are offered for pre-norm transformer blocks: timm ViT/DeiT built of timm's standard `Block`, "
                "EVA, BEiT, CaiT and Swin V1; transformers ViT, DeiT, ViT-MSN, I-JEPA, DINOv2, BEiT, data2vec-vision, "
                "CLIP, SigLIP, Swin and Donut-Swin). Use units='blocks' (CLI: --units blocks)."
            )
        family = copy.copy(self)
        family.units = units
        return family

    # ---- structure -------------------------------------------------------------------------------------
    @abc.abstractmethod
    def stages(self, model: nn.Module) -> list[nn.Sequential | nn.ModuleList]:
        """The containers of residual blocks, in forward order."""

    @abc.abstractmethod
    def is_droppable(self, block: nn.Module) -> bool:
        """Whether the block's output has its input's shape (an identity shortcut)."""

    @abc.abstractmethod
    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        """The last linear layer (conv/linear) of each branch of the block that writes to the residual stream."""

    @abc.abstractmethod
    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        """The first linear layer (conv/linear) of each branch of the block that reads the residual stream."""

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        """Layers before the stage's blocks that write the stream the stage starts from (e.g. a patch embed)."""
        return []

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        """Layers that read the stream the stage ends with: by default, the branch inputs of the next stage's
        first block; a family whose stages open with their own layers (e.g. a downsampling conv) names those."""
        stages = self.stages(model)
        if stage + 1 < len(stages) and len(stages[stage + 1]) > 0:
            return self.branch_inputs(stages[stage + 1][0])
        return []

    # ---- forward -----------------------------------------------------------------------------------------
    @abc.abstractmethod
    def forward_features(self, model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pre-pooling features: what PRACTISE mimics."""

    @abc.abstractmethod
    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        """Logits from pre-pooling features."""

    @abc.abstractmethod
    def classifier(self, model: nn.Module) -> nn.Module:
        """The head that stays frozen during the mimic finetune."""

    @abc.abstractmethod
    def data_config(self, model: nn.Module) -> dict[str, Any]:
        """Input size, mean, std, interpolation, crop: what preprocessing the model expects."""

    # ---- editing and saving ------------------------------------------------------------------------------
    def drop_blocks(self, model: nn.Module, blocks: Sequence[BlockRef]) -> None:
        """Remove the blocks for good, in place, so the model is the family's own architecture with fewer blocks.

        The blocks are checked here and removed by `remove_blocks`; the removal is recorded on the model (for
        hf_practise's checkpoint format).
        """
        stages = self.stages(model)
        gone = {(r.stage, r.index) for r in blocks}
        for ref in blocks:
            if not 0 <= ref.stage < len(stages) or not 0 <= ref.index < len(stages[ref.stage]):
                raise ValueError(f"Block {ref.path} (stage {ref.stage}, index {ref.index}) is not in this model.")
            if not self.is_droppable(stages[ref.stage][ref.index]):
                raise ValueError(f"Block {ref.path} changes the shape of its input and cannot be dropped.")
        for s, stage in enumerate(stages):
            kept = sum((s, i) not in gone for i in range(len(stage)))
            if kept < min(self.min_blocks_per_stage, len(stage)):
                raise ValueError(
                    f"Dropping these blocks leaves stage {s} with {kept} blocks; a {self.name} model keeps at least "
                    f"{self.min_blocks_per_stage} per stage. Drop fewer blocks of that stage."
                )
        self.remove_blocks(model, gone)
        record_removed(model, blocks)

    def remove_blocks(self, model: nn.Module, gone: set[tuple[int, int]]) -> None:
        """Take the (stage, index) blocks out of the model, in place (already checked by `drop_blocks`).

        By default each stage container is rebuilt (same container type) without them, so state-dict keys
        renumber as the family's library numbers a shallower model."""
        for s, stage in enumerate(self.stages(model)):
            kept = [b for i, b in enumerate(stage) if (s, i) not in gone]
            if len(kept) != len(stage):
                rebuild_stage(model, stage, kept)

    @abc.abstractmethod
    def save_pretrained(self, model: nn.Module, save_dir: Path, *, source_config: dict[str, Any]) -> list[str]:
        """Write a natively reloadable checkpoint into (an existing, empty) `save_dir`; return the files."""

    def reloads_natively(self, model: nn.Module) -> bool:
        """Whether the family's own library rebuilds this (block-dropped) model from its saved config; when not,
        it is saved in hf_practise's format and reloads with `hf_practise.load_compressed`. A model with no
        block removed is the library's own architecture and always reloads natively."""
        return self.native_reload or not getattr(model, REMOVED_ATTR, None)

    def why_not_native(self, model: nn.Module) -> str:
        """Why `model` does not reload with its family's library alone ("" when it does)."""
        return "" if self.reloads_natively(model) else self.native_reload_why

    def load_snippet(self, repo_or_path: str, *, hub: bool, native: bool = True, revision: str | None = None) -> str:
        """Python that loads a saved model (for model cards): the family's own library, or hf_practise's loader
        when `native` is False; `revision`: the Hub branch it lives on (one per point of a several-target run)."""
        if not native:
            at = f", revision={revision!r}" if hub and revision else ""
            return (
                f"# {self.library_name} cannot rebuild this block-dropped architecture from its config; this does\n"
                "from hf_practise import load_compressed\n\n"
                f'model = load_compressed("{repo_or_path}"{at})'
            )
        where = f"hf-hub:{repo_or_path}" + (f"@{revision}" if revision else "") if hub else f"local-dir:{repo_or_path}"
        return f'import timm\n\nmodel = timm.create_model("{where}", pretrained=True).eval()'

    def architecture_summary(self, model: nn.Module) -> dict[str, Any]:
        """Blocks per stage, for logs and cards."""
        return {"depths": [len(s) for s in self.stages(model)]}

    # ---- generic logic built on the above ----------------------------------------------------------------
    def blocks(self, model: nn.Module) -> list[BlockRef]:
        """Every block, in forward order."""
        names = {id(m): n for n, m in model.named_modules()}
        return [
            BlockRef(stage=s, index=i, path=names.get(id(block), f"stage{s}.{i}"))
            for s, stage in enumerate(self.stages(model))
            for i, block in enumerate(stage)
        ]

    def candidates(self, model: nn.Module) -> list[BlockRef]:
        """Blocks whose input and output shapes match: the ones PRACTISE may drop (each on its own)."""
        stages = self.stages(model)
        return [
            ref
            for ref in self.blocks(model)
            if self.is_droppable(stages[ref.stage][ref.index]) and len(stages[ref.stage]) > self.min_blocks_per_stage
        ]

    def feasible(self, model: nn.Module, ordered: Sequence[BlockRef]) -> list[BlockRef]:
        """The blocks of `ordered`, in order, less those whose drop (with every earlier kept one) would leave a
        stage with fewer than `min_blocks_per_stage` blocks: any prefix of the result can be dropped at once."""
        left = [len(s) for s in self.stages(model)]
        out = []
        for ref in ordered:
            if left[ref.stage] - 1 >= self.min_blocks_per_stage:
                left[ref.stage] -= 1
                out.append(ref)
        return out

    def resolve(self, model: nn.Module, ref: BlockRef) -> nn.Module:
        return self.stages(model)[ref.stage][ref.index]

    def adaptor_sites(
        self, model: nn.Module, dropped: Sequence[BlockRef], *, exact_only: bool = True
    ) -> list[AdaptorSite]:
        """Where PRACTISE puts adaptors around the holes left by `dropped` (blocks of the unpruned `model`).

        For a hole in stage s: after the last layer of each branch that writes the stream before it (the
        stage's earlier kept blocks, their shortcut convs, and whatever writes the stage's input), and before
        the first layer of each branch that reads the stream after it (later kept blocks of the stage and
        whatever reads the stage's output). Sites shared by several holes appear once. With `exact_only`, layers
        an adaptor cannot fold into exactly (`folds_exactly`) are left out.
        """
        stages = self.stages(model)
        names = {id(m): n for n, m in model.named_modules()}
        gone = {(r.stage, r.index) for r in dropped}
        sites: dict[tuple[int, str], AdaptorSite] = {}

        # layers inside dropped blocks get no adaptor (e.g. the next stage's first block, when it is dropped too)
        inside_gone = {id(m) for r in dropped for m in stages[r.stage][r.index].modules()}

        def add(module: nn.Module, side: Literal["pre", "post"]) -> None:
            # no adaptor inside a dropped block, nor where it would not fold exactly (weight standardisation)
            if id(module) in inside_gone or (exact_only and not folds_exactly(module)):
                return
            key = names[id(module)]
            sites.setdefault((id(module), side), AdaptorSite(module=module, side=side, key=key))

        for ref in sorted(dropped, key=lambda r: (r.stage, r.index)):
            stage = stages[ref.stage]
            for layer in self.stage_entry_outputs(model, ref.stage):
                add(layer, "post")
            for j, block in enumerate(stage):
                if (ref.stage, j) in gone:
                    continue
                if j < ref.index:
                    for layer in self.branch_outputs(block):
                        add(layer, "post")
                elif j > ref.index:
                    for layer in self.branch_inputs(block):
                        add(layer, "pre")
            for layer in self.stage_exit_inputs(model, ref.stage):
                add(layer, "pre")
        return list(sites.values())
