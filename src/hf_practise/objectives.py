"""What the mimic finetune minimises, and how it augments its batches: registered objects, not strings.

An `Objective` says what it trains (the classifier or not), what target each image needs (the teacher's features,
its logits, or the image's label), and computes the loss of one step; an `Augmentation` says whether the images keep
their labels and, when it works on the preprocessed batch, transforms it. Adding either is one class (or instance)
and one `register_*` call; `FinetuneConfig`, the CLI and the model card read the names and texts from the registries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from .training import as_logits

if TYPE_CHECKING:
    from .backbones.base import BackboneFamily

__all__ = [
    "AUGMENTATIONS",
    "OBJECTIVES",
    "Augmentation",
    "LossContext",
    "Objective",
    "StageTaps",
    "UnitTaps",
    "get_augmentation",
    "get_objective",
    "register_augmentation",
    "register_objective",
]


@dataclass
class LossContext:
    """What an objective's loss may use beside the batch: fixed for a whole finetune."""

    teacher: nn.Module
    family: BackboneFamily
    accelerator: Any  # an `accelerate.Accelerator`
    temperature: float  # `FinetuneConfig.kd_temperature`
    taps: tuple[StageTaps, StageTaps] | tuple[UnitTaps, UnitTaps] | None = None  # (student, teacher) outputs


@dataclass(frozen=True)
class Objective:
    """A finetune objective. Subclass it, set the fields and `loss`, and `register_objective` an instance.

    `target` is what each image is compared with: "features" (the teacher's pre-pooling features), "logits" (the
    teacher's logits) or "labels" (the tiny set's class ids). With `trains_classifier=False` the classifier is
    frozen and `loss` gets a model whose output is the student's pre-pooling features; otherwise the student itself.
    """

    name: str = ""
    help: str = ""  # one line, for the CLI
    card_text: str = ""  # how the model card names it; may use {t:g}, the kd temperature
    target: Literal["features", "logits", "labels"] = "features"
    trains_classifier: bool = False
    stage_outputs: bool = False  # the loss also reads every stage's output of student and teacher (`ctx.taps`)
    unit_outputs: bool = False  # ... or every kept unit's output, keyed by its place in the teacher (`UnitTaps`)

    @property
    def needs_labels(self) -> bool:
        return self.target == "labels"

    def teacher_target(self, teacher: nn.Module, family: BackboneFamily, x: torch.Tensor) -> torch.Tensor:
        """The teacher's target for a batch (not for label targets); call under `torch.no_grad()`."""
        t = family.forward_features(teacher, x)
        return family.forward_head(teacher, t) if self.target == "logits" else t

    def loss(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx: LossContext) -> torch.Tensor:
        """The mean loss of `model` on the batch `x` against `target` (one row per image)."""
        raise NotImplementedError(f"Objective `{self.name}` does not define `loss`.")


class Registry(dict):
    """Named finetune parts (objectives, augmentations) that configs and the CLI refer to by name."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, item: Any) -> Any:
        if not item.name or item.name == "auto":
            raise ValueError(f"An {self.kind} needs a name other than '' and 'auto'; got {item.name!r}.")
        self[item.name] = item
        return item

    def named(self, name: str) -> Any:
        if name not in self:
            raise ValueError(f"Unknown finetune {self.kind} `{name}`; choose {', '.join(map(repr, self))}.")
        return self[name]


OBJECTIVES = Registry("objective")


def register_objective(objective: Objective) -> Objective:
    """Make `objective` available by its name (`FinetuneConfig(objective=...)`, CLI `--objective`)."""
    return OBJECTIVES.register(objective)


def get_objective(name: str) -> Objective:
    """The registered objective called `name`."""
    return OBJECTIVES.named(name)


def relative_mse(output: torch.Tensor, target: torch.Tensor, accelerator=None) -> torch.Tensor:
    """MSE relative to the target's mean square: terms of different layers and scales are comparable. With several
    processes the mean square is the global batch's (summed over the processes' shares, equal or not), so N
    processes take the steps one would."""
    t = target.detach().float()
    power = torch.stack([t.pow(2).sum(), torch.tensor(float(t.numel()), device=t.device)])
    if accelerator is not None and accelerator.num_processes > 1:
        power = accelerator.reduce(power, reduction="sum")
    return torch.nn.functional.mse_loss(output, target) / (power[0] / power[1]).clamp_min(1e-12)


def kd_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL divergence to the teacher's softened logits, scaled by the temperature squared."""
    t = temperature
    return torch.nn.functional.kl_div(
        torch.log_softmax(logits / t, dim=-1),
        torch.log_softmax(teacher_logits / t, dim=-1),
        log_target=True,
        reduction="batchmean",
    ) * (t * t)


@dataclass(frozen=True)
class FeatureMSE(Objective):
    def loss(self, model, x, target, ctx):
        return torch.nn.functional.mse_loss(as_logits(model(x)), target)


@dataclass(frozen=True)
class LogitKD(Objective):
    def loss(self, model, x, target, ctx):
        return kd_loss(as_logits(model(x)), target, ctx.temperature)


@dataclass(frozen=True)
class LabelCE(Objective):
    def loss(self, model, x, target, ctx):
        if (target < 0).any():
            raise ValueError("The `ce` objective needs a label for every tiny-set image.")
        return torch.nn.functional.cross_entropy(as_logits(model(x)), target)


@dataclass(frozen=True)
class FeaturesAndKD(Objective):
    def loss(self, model, x, target, ctx):
        # the feature error relative to the teacher features' mean square (scale-free, like the KL term), plus the
        # KL to the teacher's logits: two terms of comparable size whatever the model
        feats = model(x)
        with torch.no_grad():
            teacher_logits = ctx.family.forward_head(ctx.teacher, target)
        logits = ctx.family.forward_head(ctx.accelerator.unwrap_model(model).model, feats)
        return relative_mse(feats, target, ctx.accelerator) + kd_loss(logits, teacher_logits, ctx.temperature)


@dataclass(frozen=True)
class FeaturesAndStages(Objective):
    def loss(self, model, x, target, ctx):
        # every stage's output as well as the pre-pooling features, each relative to the teacher's mean square,
        # averaged (a stage the student has no block left in has no term); the teacher's forward filled its taps
        teacher_stages = ctx.taps[1].take()
        feats = model(x)
        student_stages = ctx.taps[0].take()
        if not teacher_stages:
            raise RuntimeError(
                f"The {self.name} objective saw no stage output of the teacher: the {ctx.family.name} family's "
                "stages are not modules that its forward runs. Use another --objective, and report this."
            )
        terms = [relative_mse(feats, target, ctx.accelerator)]
        terms += [
            relative_mse(student_stages[s], teacher_stages[s], ctx.accelerator)
            for s in student_stages
            if s in teacher_stages
        ]
        return torch.stack(terms).mean()


@dataclass(frozen=True)
class FeaturesKDAndUnits(Objective):
    def loss(self, model, x, target, ctx):
        # features+kd, plus the mean relative MSE of the stream after every unit the student kept against the
        # teacher's after the same unit: each kept unit is told what it should hand on, not only the last one
        teacher_units = ctx.taps[1].take()
        loss = FEATURES_AND_KD.loss(model, x, target, ctx)
        student_units = ctx.taps[0].take()
        terms = [relative_mse(out, teacher_units[k], ctx.accelerator) for k, out in student_units.items()]
        return loss + torch.stack(terms).mean() if terms else loss


register_objective(
    FeatureMSE(
        "features",
        help="MSE on pre-pooling features (the paper's PRACTISE)",
        card_text="MSE on pre-pooling features (feature mimicking)",
    )
)
register_objective(
    LogitKD(
        "kd",
        help="KL to the teacher's logits (a baseline of the paper)",
        card_text="KL divergence to the teacher's logits at temperature {t:g}",
        target="logits",
        trains_classifier=True,
    )
)
register_objective(
    LabelCE(
        "ce",
        help="cross-entropy on the tiny set's labels (a baseline of the paper; needs labels)",
        card_text="cross-entropy on the tiny set's labels",
        target="labels",
        trains_classifier=True,
    )
)
FEATURES_AND_KD = register_objective(
    FeaturesAndKD(
        "features+kd",
        help="feature MSE relative to the teacher features' mean square, plus the KL to its logits",
        card_text="MSE on pre-pooling features (relative to their mean square) plus KL to the teacher's logits at "
        "temperature {t:g}",
    )
)
register_objective(
    FeaturesAndStages(
        "features+stages",
        help="relative MSE of the pre-pooling features and of every stage's output, averaged",
        card_text="MSE on pre-pooling features and on every stage's output (each relative to the teacher's "
        "mean square), averaged",
        stage_outputs=True,
    )
)

register_objective(
    FeaturesKDAndUnits(
        "features+kd+units",
        help="features+kd, plus the relative MSE of the stream after every kept block (or branch) against the "
        "teacher's after the same one",
        card_text="MSE on pre-pooling features (relative to their mean square) plus KL to the teacher's logits at "
        "temperature {t:g}, plus the relative MSE after every kept block against the teacher's",
        unit_outputs=True,
    )
)


class _Taps:
    """Outputs of modules during a forward, by key, through forward hooks; `take` hands them over and forgets them."""

    def __init__(self) -> None:
        self.outputs: dict = {}
        self.handles = []

    def _tap(self, module: nn.Module, key) -> None:
        def hook(module: nn.Module, args, out) -> None:
            self.outputs[key] = out[0] if isinstance(out, (tuple, list)) else out

        self.handles.append(module.register_forward_hook(hook))

    def take(self) -> dict:
        out, self.outputs = self.outputs, {}
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class StageTaps(_Taps):
    """Each stage's output during a forward of `model` (a hook on the stage's last block), by stage index. Where a
    family's candidates are views that the model never calls (a Swin pair, an attention or MLP branch unit), the
    hook goes on the module of the model that computes the view's output (`output_module`)."""

    def __init__(self, model: nn.Module, family: BackboneFamily) -> None:
        super().__init__()
        for s, stage in enumerate(family.stages(model)):
            if len(stage) > 0:
                last = stage[len(stage) - 1]
                self._tap(getattr(last, "output_module", last), s)


def unit_places(model: nn.Module, family: BackboneFamily, teacher: nn.Module) -> list[list[int]]:
    """Per stage, the teacher's index of each unit of `model` (`teacher` with units removed by `drop_blocks`, which
    records each round of removals on the model): the rounds replayed on the teacher's unit indices."""
    from .backbones.base import REMOVED_ATTR

    places = [list(range(len(stage))) for stage in family.stages(teacher)]
    # a teacher that was itself compressed carries its own rounds: the model's first ones
    for removed in getattr(model, REMOVED_ATTR, [])[len(getattr(teacher, REMOVED_ATTR, [])) :]:
        for stage, index, _ in sorted(removed, key=lambda r: (r[0], -r[1])):
            del places[stage][index]
    if [len(p) for p in places] != [len(stage) for stage in family.stages(model)]:
        raise RuntimeError(
            f"The {family.name} model's units do not match its teacher's with its recorded removals; the unit "
            "objectives cannot align them. Use another --objective, and report this."
        )
    return places


class UnitTaps(_Taps):
    """The stream after every unit of `model` during a forward, keyed by (stage, place in the teacher). Units with
    one output module (a block's attention and MLP branches) are one tap, keyed by the teacher's last unit of that
    module, so a block the student kept without its MLP is still compared with the teacher's whole block."""

    def __init__(self, model: nn.Module, family: BackboneFamily, teacher: nn.Module) -> None:
        super().__init__()
        own = unit_places(model, family, teacher) if model is not teacher else None
        for s, (units, t_units) in enumerate(zip(family.stages(model), family.stages(teacher))):
            t_mods = [id(getattr(u, "output_module", u)) for u in t_units]
            last = {m: i for i, m in enumerate(t_mods)}  # the teacher's last unit of each output module
            keyed: dict[int, tuple[nn.Module, tuple[int, int]]] = {}
            for k, u in enumerate(units):
                place = own[s][k] if own is not None else k
                module = getattr(u, "output_module", u)
                keyed[id(module)] = (module, (s, last[t_mods[place]]))
            for module, key in keyed.values():
                self._tap(module, key)


@dataclass(frozen=True)
class Augmentation:
    """A finetune augmentation. `batch` (when set) transforms a preprocessed batch with a generator seeded by (seed,
    step), in the training loop; without it the images are used as they are, or (`needs_original_images`) the
    compressor builds an augmented dataset from the original images. An augmentation that does not keep the labels
    only goes with a label-free objective."""

    name: str
    help: str = ""  # one line, for the CLI
    card_text: str = ""  # what the model card says the finetune trained on
    keeps_labels: bool = True
    needs_original_images: bool = False
    batch: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None

    @property
    def label_free(self) -> bool:
        return not self.keeps_labels


AUGMENTATIONS = Registry("augmentation")


def register_augmentation(augmentation: Augmentation) -> Augmentation:
    """Make `augmentation` available by its name (`FinetuneConfig(augmentation=...)`, CLI `--augmentation`)."""
    return AUGMENTATIONS.register(augmentation)


def get_augmentation(name: str) -> Augmentation:
    """The registered augmentation called `name`."""
    return AUGMENTATIONS.named(name)


def flip_batch(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A horizontal flip of half the images (each with probability 1/2)."""
    flip = torch.rand(len(x), generator=g) < 0.5
    return torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)


def crop_batch(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """`flip_batch`, then a random shift of each image by up to an eighth of its side (reflect-padded, cropped back
    to its size)."""
    x = flip_batch(x, g)
    h, w = x.shape[-2:]
    ph, pw = max(1, h // 8), max(1, w // 8)
    padded = torch.nn.functional.pad(x, (pw, pw, ph, ph), mode="reflect")
    dy = torch.randint(0, 2 * ph + 1, (len(x),), generator=g).tolist()
    dx = torch.randint(0, 2 * pw + 1, (len(x),), generator=g).tolist()
    return torch.stack([padded[i, :, a : a + h, b : b + w] for i, (a, b) in enumerate(zip(dy, dx))])


def mixup_batch(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """`flip_batch`, then a blend of each image with another image of the batch, weight ~ Beta(1, 1) per image."""
    x = flip_batch(x, g)
    if len(x) > 1:
        lam = torch.rand(len(x), generator=g).to(x.device, x.dtype)[:, None, None, None]
        other = torch.randperm(len(x), generator=g).to(x.device)
        x = lam * x + (1 - lam) * x[other]
    return x


def crop_mixup_batch(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """`crop_batch` (flip and shift), then the blend of `mixup_batch` (which flips the shifted images once more at
    random: a flip of a flip at random is a flip at random)."""
    return mixup_batch(crop_batch(x, g), g)


register_augmentation(
    Augmentation("none", help="the images as they are", card_text="the tiny set's images as they are")
)
register_augmentation(
    Augmentation(
        "timm",
        help="the model's own training transform from its config (needs the original images)",
        card_text="the tiny set's images through the model's own training transform",
        needs_original_images=True,
    )
)
register_augmentation(
    Augmentation(
        "flip",
        help="mirror half of each batch",
        card_text="the tiny set's images, half of each batch mirrored",
        batch=flip_batch,
    )
)
register_augmentation(
    Augmentation(
        "crop",
        help="flip, and shift each image by up to 1/8 of its side (reflect padding)",
        card_text="the tiny set's images mirrored and shifted by up to 1/8 of their side",
        batch=crop_batch,
    )
)
register_augmentation(
    Augmentation(
        "mixup",
        help="flip, and blend each image with another of the batch (weight ~ Beta(1, 1)); label-free objectives only",
        card_text="the tiny set's images mirrored and blended in pairs (mixup; the teacher's outputs of the blends as "
        "targets)",
        keeps_labels=False,
        batch=mixup_batch,
    )
)
register_augmentation(
    Augmentation(
        "crop+mixup",
        help="crop's flips and shifts, then mixup's blends; label-free objectives only",
        card_text="the tiny set's images mirrored, shifted by up to 1/8 of their side and blended in pairs (the "
        "teacher's outputs of the blends as targets)",
        keeps_labels=False,
        batch=crop_mixup_batch,
    )
)
