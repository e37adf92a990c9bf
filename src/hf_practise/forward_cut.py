"""Running a pruned copy of the teacher from where it starts to differ.

A candidate's hole and its adaptors change the network only from its stage on (the adaptors sit in the stage's
blocks and in whatever writes the stage's input), so everything the network computes before that point is the
teacher's own, for every step of the candidate's adaptor training. The scan computes the teacher's input to
that point (a *cut*: the input of one block) once per tiny-set image and runs each step from there.

Nothing here is family-specific. One traced forward of the teacher records when every module runs; a cut is the
latest block that runs before anything the candidate changes; the modules that finish before the cut are
swapped, in the student, for modules that return zeros of their recorded shape (they cost a memset), and a
pre-hook on the cut block replaces its input with the cached one. Whether that reproduces the full forward is
checked on every student before it is used (a family whose later blocks read values computed before the cut,
e.g. position tables passed to every block, fails the check and runs in full).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import torch
from torch import nn

from .backbones.base import BackboneFamily, BlockRef

logger = logging.getLogger(__name__)

__all__ = ["ForwardTrace", "CutForward", "CutCache", "cut_inputs"]

#: a cut is used only when the cut forward matches the full one this closely (largest |difference| relative to
#: the largest |feature|) on the first images
CHECK_TOLERANCE = 1e-5
CHECK_IMAGES = 8


class _Stop(Exception):
    """Raised by the capture hook: nothing after the cut is needed for the teacher's cut inputs."""


class ForwardTrace:
    """When each module of `teacher` runs (one traced forward), and the blocks that can serve as cuts."""

    def __init__(self, teacher: nn.Module, family: BackboneFamily, sample: torch.Tensor) -> None:
        self.family = family
        self._root = teacher
        self.names = {id(m): n for n, m in teacher.named_modules()}
        self.ranges: dict[str, tuple[int, int]] = {}  # name -> (first pre-hook tick, last post-hook tick)
        self.shapes: dict[str, tuple[torch.Size, torch.dtype] | None] = {}  # per-sample output shape, if a tensor
        batch = sample.shape[0]
        tick = [0]

        def pre(module: nn.Module, args) -> None:
            name = self.names[id(module)]
            first = self.ranges.get(name, (tick[0], tick[0]))[0]
            self.ranges[name] = (first, tick[0])
            tick[0] += 1

        def post(module: nn.Module, args, out) -> None:
            name = self.names[id(module)]
            self.ranges[name] = (self.ranges[name][0], tick[0])
            tick[0] += 1
            ok = isinstance(out, torch.Tensor) and out.dim() > 0 and out.shape[0] == batch
            if name in self.shapes:  # called more than once: replaceable only if every call looked the same
                ok = ok and self.shapes[name] == (out.shape[1:], out.dtype)
            self.shapes[name] = (out.shape[1:], out.dtype) if ok else None

        handles = []
        for m in teacher.modules():
            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(post))
        was_training = teacher.training
        teacher.eval()
        try:
            with torch.no_grad():
                family.forward_features(teacher, sample)
        finally:
            teacher.train(was_training)
            for h in handles:
                h.remove()
        stages = family.stages(teacher)
        self.blocks = [
            (s, i, self.names[id(b)])
            for s, stage in enumerate(stages)
            for i, b in enumerate(stage)
            if id(b) in self.names
        ]

    def cut_for(self, teacher: nn.Module, block: BlockRef) -> str | None:
        """The block (its name in `teacher`) whose input the student of a hole at `block` starts from, or None
        when nothing before the changes can be skipped."""
        family = self.family
        changed = [self.names[id(site.module)] for site in family.adaptor_sites(teacher, [block])]
        stages = family.stages(teacher)
        changed.append(self.names[id(stages[block.stage][block.index])])
        if any(name not in self.ranges for name in changed):
            return None
        first_change = min(self.ranges[name][0] for name in changed)
        best: tuple[int, str] | None = None
        for s, i, name in self.blocks:
            if (s, i) == (block.stage, block.index) or name not in self.ranges:
                continue
            start = self.ranges[name][0]
            if start < first_change and (best is None or start > best[0]):
                best = (start, name)
        if best is None or not self.skippable(best[1]):
            return None
        return best[1]

    def skippable(self, cut: str) -> list[str]:
        """The largest modules that finish before `cut` starts and return one batch-shaped tensor."""
        start = self.ranges[cut][0]
        found: list[str] = []

        def visit(name: str, module: nn.Module) -> None:
            span = self.ranges.get(name)
            if span is not None and span[1] < start and self.shapes.get(name) is not None:
                found.append(name)
                return
            if span is not None and span[0] > start:
                return  # runs after the cut starts
            for child_name, child in module.named_children():
                visit(f"{name}.{child_name}" if name else child_name, child)

        visit("", self._root)
        return found


class _Zeros(nn.Module):
    """Stands in for a module that runs before the cut: zeros of its output's shape."""

    def __init__(self, shape: torch.Size, dtype: torch.dtype, state: dict) -> None:
        super().__init__()
        self.shape, self.dtype, self.state = tuple(shape), dtype, state

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return torch.zeros((self.state["batch"], *self.shape), dtype=self.dtype, device=self.state["device"])


def _resolve(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, attr = name.rpartition(".")
    return (root.get_submodule(parent_name) if parent_name else root), attr


@torch.no_grad()
def cut_inputs(
    teacher: nn.Module, family: BackboneFamily, cut: str, images: torch.Tensor, *, batch_size: int
) -> torch.Tensor:
    """The teacher's input to block `cut` for every image (eval mode), on the CPU."""
    block = teacher.get_submodule(cut)
    device = next(teacher.parameters()).device
    chunks: list[torch.Tensor] = []

    def capture(module: nn.Module, args) -> None:
        if not args or not isinstance(args[0], torch.Tensor):
            raise TypeError(f"{cut} is not called with its input tensor first")
        chunks.append(args[0].detach().cpu())
        raise _Stop

    was_training = teacher.training
    teacher.eval()
    handle = block.register_forward_pre_hook(capture)
    try:
        for i in range(0, len(images), batch_size):
            try:
                family.forward_features(teacher, images[i : i + batch_size].to(device))
            except _Stop:
                pass
    finally:
        handle.remove()
        teacher.train(was_training)
    return torch.cat(chunks)


class CutForward:
    """Pre-pooling features of students that differ from the teacher only after `cut`, run from there.

    `features(student, idx)` equals `family.forward_features(student, images[idx])` (checked per student by
    `install`), at the cost of the part after the cut.
    """

    def __init__(
        self, trace: ForwardTrace, cut: str, inputs: torch.Tensor, images: torch.Tensor, family: BackboneFamily
    ) -> None:
        self.trace, self.cut, self.inputs, self.images, self.family = trace, cut, inputs, images, family
        self.skipped = trace.skippable(cut)

    @contextmanager
    def install(self, student: nn.Module):
        """Swap the skipped modules of `student` for zeros and feed the cut block the cached input; yields a
        `features(idx)` function, or None when the cut forward does not reproduce the full one on this student."""
        device = next(student.parameters()).device
        state: dict = {"batch": 0, "device": device, "idx": None}
        originals: list[tuple[nn.Module, str, nn.Module]] = []
        handle = None

        def full(idx) -> torch.Tensor:
            return self.family.forward_features(student, self.images[idx].to(device))

        def feed(module: nn.Module, args):
            return (self.inputs[state["idx"]].to(device), *args[1:])

        def cut_features(idx) -> torch.Tensor:
            images = self.images[idx]
            state["batch"], state["idx"] = images.shape[0], idx
            return self.family.forward_features(student, images.to(device))

        def restore() -> None:
            if handle is not None:
                handle.remove()
            for parent, attr, module in reversed(originals):
                setattr(parent, attr, module)
            originals.clear()

        try:
            with torch.no_grad():
                probe = slice(0, min(CHECK_IMAGES, len(self.images)))
                reference = full(probe)
            for name in self.skipped:
                parent, attr = _resolve(student, name)
                shape, dtype = self.trace.shapes[name]
                originals.append((parent, attr, getattr(parent, attr)))
                setattr(parent, attr, _Zeros(shape, dtype, state))
            handle = student.get_submodule(self.cut).register_forward_pre_hook(feed)
            try:
                with torch.no_grad():
                    got = cut_features(probe)
                gap = (got - reference).abs().max().item() if got.shape == reference.shape else float("inf")
            except RuntimeError:  # the model computes something the cut skips (e.g. a CSP stage's other half)
                gap = float("inf")
            if gap <= CHECK_TOLERANCE * max(reference.abs().max().item(), 1e-12):
                yield cut_features
            else:
                # the full forward runs on the student as it was: the stand-ins and the hook go first
                restore()
                handle = None
                logger.debug(
                    "forward cut at %s does not reproduce the full forward (gap %.3g); running in full", self.cut, gap
                )
                yield None
        finally:
            restore()


class CutCache:
    """The cuts of one scan: the teacher's trace, and each cut's cached inputs, computed when first needed.

    `max_bytes` bounds all cached inputs together: a cut that would go over it runs from the image."""

    def __init__(
        self, teacher: nn.Module, family: BackboneFamily, images: torch.Tensor, *, batch_size: int, max_bytes: int
    ) -> None:
        self.teacher, self.family, self.images = teacher, family, images
        self.batch_size, self.max_bytes = batch_size, max_bytes
        device = next(teacher.parameters()).device
        self.trace = ForwardTrace(teacher, family, images[:2].to(device))
        self._cuts: dict[str, CutForward | None] = {}

    def for_block(self, block: BlockRef) -> CutForward | None:
        try:
            cut = self.trace.cut_for(self.teacher, block)
        except (KeyError, AttributeError):
            return None
        if cut is None:
            return None
        if cut not in self._cuts:
            self._cuts[cut] = None
            per_image = _input_numel(self.teacher, self.family, cut, self.images)
            held = sum(c.inputs.numel() * c.inputs.element_size() for c in self._cuts.values() if c is not None)
            if per_image is not None and held + per_image * 4 * len(self.images) <= self.max_bytes:
                inputs = cut_inputs(self.teacher, self.family, cut, self.images, batch_size=self.batch_size)
                self._cuts[cut] = CutForward(self.trace, cut, inputs, self.images, self.family)
        return self._cuts[cut]


def _input_numel(teacher: nn.Module, family: BackboneFamily, cut: str, images: torch.Tensor) -> int | None:
    """Elements per image of the cut block's input (one traced image)."""
    try:
        one = cut_inputs(teacher, family, cut, images[:1], batch_size=1)
    except TypeError:
        return None
    return one[0].numel()
