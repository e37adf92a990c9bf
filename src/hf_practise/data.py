"""Tiny sets and eval sets: from `datasets`, torch Datasets/DataLoaders or tensors, preprocessed as the model expects.

PRACTISE needs only a few hundred images and no labels. `load_tiny_set` samples them (seeded), applies the
model's own eval transform and keeps them in memory as one tensor, together with which examples were used and
a hash of them, so a run can be reproduced. `as_torch_dataset` wraps any supported source for evaluation.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from .provenance import public_name

logger = logging.getLogger(__name__)

__all__ = [
    "BrokenImageError",
    "TinySet",
    "TinySetInfo",
    "load_tiny_set",
    "as_torch_dataset",
    "load_image_dataset",
    "model_transform",
    "sample_indices",
]

NO_LABEL = -1


class BrokenImageError(ValueError):
    """An image of the data set cannot be decoded; `where` names its file (or its example index), `public` the
    same as a report may publish it (relative to the dataset folder, never an absolute local path)."""

    def __init__(self, where: str, index: int, cause: BaseException, *, public: str | None = None) -> None:
        self.where, self.index, self.public = where, index, public or where
        super().__init__(
            f"Image {where} (example {index}) cannot be decoded ({type(cause).__name__}: {cause}). Remove or replace "
            "it, or leave broken images out with `skip_broken=True` (CLI: --skip-broken-images)."
        )


#: PIL image modes of the channel counts a PIL image can be converted to
_MODES = {1: "L", 3: "RGB"}


def fit_channels(data_config: dict[str, Any], channels: int) -> dict[str, Any]:
    """`data_config` for a model that takes `channels`-channel images: that many in `input_size`, and a mean and
    std of that many values.

    timm keeps a 3-channel pretrained_cfg (input size, RGB mean/std) on a model built with `in_chans=1`. Its own
    scripts then normalise with the average of the cfg's values ("Pretrained mean does not match 1 channels; using
    its mean value": `timm.data.resolve_input_data_config`, also what `save_for_hf` writes), so a grey model trained
    with timm saw those statistics, and they are the ones used here; a single value is repeated for every channel.
    """
    if tuple(data_config["input_size"])[0] == channels and all(
        len(tuple(data_config[k])) == channels for k in ("mean", "std")
    ):
        return data_config
    out = dict(data_config)
    out["input_size"] = (channels, *tuple(out["input_size"])[1:])
    for key in ("mean", "std"):
        values = tuple(out[key])
        if len(values) != channels:
            out[key] = (sum(values) / len(values),) * channels
    return out


class ToChannels:
    """Convert a PIL image to the model's channel count (grey for 1, RGB for 3) before the timm transform."""

    def __init__(self, channels: int) -> None:
        self.channels = channels

    def __call__(self, image: Any) -> Any:
        mode = _MODES.get(self.channels)
        if mode is None:
            raise ValueError(
                f"The model takes {self.channels}-channel images; images can be converted to 1 (grey) or 3 (RGB) "
                f"channels only. Pass the tiny set as preprocessed (N, {self.channels}, H, W) float tensors."
            )
        return image.convert(mode) if getattr(image, "mode", mode) != mode else image

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.channels})"


def model_transform(data_config: dict[str, Any], *, training: bool = False) -> Callable:
    """The timm transform for `data_config` (eval: resize/crop/normalise; training: timm's augmentation). For a
    model that does not take 3 channels, PIL images are first converted to its channel count (see `fit_channels`
    for the statistics a grey model is normalised with)."""
    from timm.data import create_transform

    transform = create_transform(**data_config, is_training=training)
    channels = int(data_config["input_size"][0])
    if channels == 3:
        return transform
    from torchvision import transforms

    return transforms.Compose([ToChannels(channels), transform])


def _is_hf_dataset(obj: Any) -> bool:
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        return False
    return isinstance(obj, datasets.Dataset)


def _image_column(ds: Any, image_column: str | None) -> str:
    from datasets import Image

    if image_column is not None:
        if image_column not in ds.column_names:
            raise ValueError(
                f"Image column `{image_column}` not found; the dataset has columns {ds.column_names}. "
                "Pass the right one with `image_column=` (CLI: --image-column)."
            )
        if not isinstance(ds.features[image_column], Image):
            raise ValueError(
                f"Column `{image_column}` holds {ds.features[image_column]!r}, not images. Pass a column of "
                "`datasets.Image` type with `image_column=` (CLI: --image-column), or cast it with "
                "`ds.cast_column(name, datasets.Image())`."
            )
        return image_column
    found = [name for name, feat in ds.features.items() if isinstance(feat, Image)]
    if not found:
        raise ValueError(
            f"No image column in this dataset (columns: {ds.column_names}). Cast one with "
            "`ds.cast_column(name, datasets.Image())` or pass `image_column=`."
        )
    return found[0]


#: columns taken as labels (when they hold class ids) without `label_column`
LABEL_NAMES = ("label", "labels", "fine_label")


def _holds_strings(feature: Any) -> bool:
    from datasets import Value

    return isinstance(feature, Value) and feature.dtype in ("string", "large_string")


def string_labels_message(column: str) -> str:
    return (
        f"Labels of column `{column}` are strings, not class ids; cast it to ClassLabel (datasets: "
        f"`.class_encode_column({column!r})`, or `.cast_column({column!r}, ClassLabel(names=[...]))` to keep the "
        "model's class order)."
    )


def _string_label_column(ds: Any, label_column: str | None) -> str | None:
    """The column that holds the labels as strings (class names): `label_column`, or one of `LABEL_NAMES`."""
    names = [label_column] if label_column is not None else [n for n in LABEL_NAMES if n in ds.column_names]
    return next((n for n in names if _holds_strings(ds.features[n])), None)


def _label_column(ds: Any, label_column: str | None) -> str | None:
    """The column of class ids: `label_column`, else the first ClassLabel, else an integer column of
    `LABEL_NAMES`; None when there is none (a column of strings is not one: see `_string_label_column`)."""
    from datasets import ClassLabel, Value

    if label_column is not None:
        if label_column not in ds.column_names:
            raise ValueError(f"Label column `{label_column}` not found; the dataset has columns {ds.column_names}.")
        return None if _holds_strings(ds.features[label_column]) else label_column
    for name, feat in ds.features.items():
        if isinstance(feat, ClassLabel):
            return name
    for name in LABEL_NAMES:
        if name in ds.column_names and isinstance(ds.features[name], Value) and "int" in ds.features[name].dtype:
            return name
    return None


class _HFImages(Dataset):
    """A `datasets.Dataset` as (image tensor, label) pairs; label -1 when the dataset has none."""

    def __init__(self, ds: Any, transform: Callable, image_column: str | None, label_column: str | None) -> None:
        self.ds = ds
        self.transform = transform
        self.image_column = _image_column(ds, image_column)
        self.label_column = _label_column(ds, label_column)
        strings = None if self.label_column is not None else _string_label_column(ds, label_column)
        #: why there are no labels although a label column exists (its labels are strings), else None
        self.label_problem = string_labels_message(strings) if strings else None

    def class_id(self, value: Any) -> int:
        """A label of the label column as a class id: a ClassLabel maps a class name to its id."""
        from datasets import ClassLabel

        feature = self.ds.features[self.label_column]
        if isinstance(value, str) and isinstance(feature, ClassLabel):
            try:
                return feature.str2int(value)
            except ValueError as e:
                raise ValueError(
                    f"Label `{value}` of column `{self.label_column}` is not one of its ClassLabel's names "
                    f"{feature.names[:10]}{' ...' if len(feature.names) > 10 else ''}."
                ) from e
        if isinstance(value, str):
            raise ValueError(string_labels_message(self.label_column))
        return int(value)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        try:
            row = self.ds[int(i)]
            image = row[self.image_column]
            image = image.convert("RGB")  # decodes the whole image: a truncated file fails here, not later
            x = self.transform(image)
        except (OSError, SyntaxError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
            path = self._file(int(i))
            if path is None:
                raise BrokenImageError(f"#{i}", int(i), e) from e
            public = relative_to_dataset(path, getattr(self.ds, "_hf_practise_path", None))
            raise BrokenImageError(f"`{path}`", int(i), e, public=public) from e
        label = NO_LABEL if self.label_column is None else self.class_id(row[self.label_column])
        return x, label

    def _file(self, i: int) -> str | None:
        """The file of example `i`, read without decoding it (None when the dataset does not say)."""
        from datasets import Image

        try:
            raw = self.ds.cast_column(self.image_column, Image(decode=False))[i][self.image_column]
        except Exception:  # noqa: BLE001 - only for the message
            return None
        return raw.get("path") or None


def relative_to_dataset(path: str, root: str | os.PathLike | None) -> str:
    """An image's `path` as a report may publish it: relative to the dataset folder `root` when it lies inside,
    else its file name alone (never an absolute local path)."""
    file = Path(path)
    if not file.is_absolute():
        return path
    if root is not None:
        with contextlib.suppress(ValueError, OSError):
            return file.resolve().relative_to(Path(root).resolve()).as_posix()
    return file.name


class _TorchItems(Dataset):
    """A torch Dataset whose items are tensors, PIL images, (x, y) pairs or dicts, as (tensor, label) pairs."""

    def __init__(self, ds: Dataset, transform: Callable | None) -> None:
        self.ds = ds
        self.transform = transform

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return _split_item(self.ds[i], self.transform)


def check_float_images(x: torch.Tensor) -> None:
    """Refuse an integer image tensor: tensors are taken as preprocessed model inputs, and raw uint8 pixels are not."""
    if not x.is_floating_point():
        raise ValueError(
            f"Image tensors are taken as preprocessed model inputs (float, normalised), but this one is {x.dtype}: "
            "raw pixels? Convert it to float and normalise it with the model's mean/std "
            "(`compressor.family.data_config(compressor.model)`), or pass the images (PIL) or a `datasets.Dataset` "
            "and hf_practise preprocesses them."
        )


def _split_item(item: Any, transform: Callable | None) -> tuple[torch.Tensor, int]:
    label: Any = NO_LABEL
    if isinstance(item, dict):
        x = item.get("pixel_values", item.get("image", item.get("img")))
        label = item.get("label", item.get("labels", NO_LABEL))
        if x is None:
            raise ValueError(f"Dict items need a `pixel_values` or `image` key; got keys {sorted(item)}.")
    elif isinstance(item, (tuple, list)):
        x = item[0]
        if len(item) > 1:
            label = item[1]
    else:
        x = item
    if not isinstance(x, torch.Tensor):
        if transform is None:
            raise ValueError(f"Items must be image tensors (C, H, W); got {type(x).__name__}.")
        if hasattr(x, "convert") and getattr(x, "mode", "RGB") != "RGB":
            x = x.convert("RGB")
        x = transform(x)
    else:
        check_float_images(x)
    if isinstance(label, str):
        raise ValueError(
            f"Labels must be class ids; got the string {label!r}. Map class names to ids before passing the data "
            "(e.g. with a `datasets.ClassLabel`)."
        )
    return x, int(label) if not isinstance(label, torch.Tensor) else int(label.item())


def as_torch_dataset(
    source: Any,
    *,
    transform: Callable | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
) -> Dataset:
    """Wrap a `datasets.Dataset`, torch Dataset or (N, C, H, W) tensor as a Dataset of (tensor, label) pairs."""
    if _is_hf_dataset(source):
        if transform is None:
            raise ValueError("A `datasets.Dataset` of images needs a transform (the model's eval transform).")
        return _HFImages(source, transform, image_column, label_column)
    if isinstance(source, torch.Tensor):
        if source.ndim != 4:
            raise ValueError(f"A tensor tiny set must be (N, C, H, W); got shape {tuple(source.shape)}.")
        check_float_images(source)
        return _TorchItems(torch.utils.data.TensorDataset(source), None)
    if isinstance(source, Dataset):
        return _TorchItems(source, transform)
    raise TypeError(
        f"Unsupported data source {type(source).__name__}; pass a `datasets.Dataset`, a torch Dataset or "
        "DataLoader, or an (N, C, H, W) tensor."
    )


def known_labels(ds: Dataset) -> list[int] | None:
    """The labels of a Dataset made by `as_torch_dataset`, read without decoding an image: a `datasets` label
    column, or the second tensor of a TensorDataset; None where only decoding every item would tell.

    Raises:
        ValueError: the label column holds strings, not class ids.
    """
    if isinstance(ds, _HFImages):
        if ds.label_problem:
            raise ValueError(f"The eval set needs class ids. {ds.label_problem}")
        return None if ds.label_column is None else [ds.class_id(y) for y in ds.ds[ds.label_column]]
    inner = getattr(ds, "ds", None)
    if isinstance(inner, torch.utils.data.TensorDataset) and len(inner.tensors) > 1:
        return [int(y) for y in inner.tensors[1].reshape(-1).tolist()]
    return None


def describe_source(source: Any) -> dict[str, Any]:
    """Name, split, size and Hub id (when known) of a data source, for reports and model cards."""
    info: dict[str, Any] = {"name": type(source).__name__}
    if _is_hf_dataset(source):
        hub_id = getattr(source, "_hf_practise_hub_id", None)
        name = (
            hub_id
            or public_name(getattr(source, "_hf_practise_path", None))
            or getattr(source.info, "dataset_name", None)
            or getattr(source.info, "builder_name", None)
        )
        info.update(
            name=name or "dataset", split=str(source.split) if source.split is not None else None, hub_id=hub_id
        )
    with contextlib.suppress(TypeError):
        info["num_samples"] = len(source)
    return info


def sample_indices(total: int, num_samples: int | None, seed: int) -> list[int]:
    """`num_samples` distinct indices out of `total`, seeded; all of them, in order, when `num_samples` is None."""
    if total == 0:
        raise ValueError("The dataset is empty: PRACTISE needs at least one image (50-500 work well).")
    if num_samples is None:
        return list(range(total))
    if num_samples < 1:
        raise ValueError(f"`num_samples` must be at least 1, got {num_samples}.")
    if num_samples > total:
        raise ValueError(
            f"Asked for {num_samples} samples but the dataset has only {total}; lower `num_samples` "
            f"(CLI: --num-samples) to at most {total} or choose a larger split."
        )
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(total, generator=g)[:num_samples].tolist())


@dataclass
class TinySet:
    """The images PRACTISE learns from, preprocessed, in memory."""

    images: torch.Tensor  # (N, C, H, W), normalised as the model expects
    labels: torch.Tensor | None  # (N,) or None when unlabeled
    indices: list[int]  # which examples of the source were used
    source: str  # a description of where they came from
    fingerprint: str = field(default="")  # sha256 of the preprocessed images (first 16 hex digits)
    skipped: list[str] = field(default_factory=list)  # images left out because they could not be decoded, by
    # path relative to the dataset folder (or file name, or `#index`): never an absolute local path
    label_problem: str | None = None  # why `labels` is None although the source has a label column (strings)

    def __len__(self) -> int:
        return self.images.shape[0]

    def info(self, seed: int, hub_id: str | None = None) -> TinySetInfo:
        """What the report and the card say about this set (no images: enough to tell whether a rerun used the same)."""
        return TinySetInfo(
            source=self.source,
            num_samples=len(self),
            seed=seed,
            fingerprint=self.fingerprint,
            indices_sha256=describe_indices(self.indices),
            labelled=self.labels is not None,
            skipped_broken=list(self.skipped),
            hub_id=hub_id,
        )


@dataclass
class TinySetInfo:
    """The tiny set a result was made from: where it came from, its size and seed, and hashes of the images and of
    the example indices used (a rerun with the same `fingerprint` saw the same preprocessed pixels)."""

    source: str
    num_samples: int
    seed: int
    fingerprint: str
    indices_sha256: str
    labelled: bool
    skipped_broken: list[str] = field(default_factory=list)
    hub_id: str | None = None  # the Hub dataset id, when it came from the Hub

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None or k != "hub_id"}


def _fingerprint(images: torch.Tensor) -> str:
    return hashlib.sha256(images.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def sample_per_class(labels: Sequence[int], per_class: int, seed: int) -> list[int]:
    """`per_class` seeded indices of every class in `labels` (sorted)."""
    if per_class < 1:
        raise ValueError(f"`per_class` must be at least 1, got {per_class}.")
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    if not by_class:
        raise ValueError("The dataset is empty: PRACTISE needs at least one image (50-500 work well).")
    g = torch.Generator().manual_seed(seed)
    out: list[int] = []
    for y, idx in sorted(by_class.items()):
        if len(idx) < per_class:
            raise ValueError(
                f"Class {y} has only {len(idx)} images; lower `per_class` (CLI: --per-class) to at most {len(idx)}."
            )
        out += [idx[j] for j in torch.randperm(len(idx), generator=g)[:per_class].tolist()]
    return sorted(out)


def load_tiny_set(
    source: Any,
    *,
    transform: Callable | None = None,
    num_samples: int | None = None,
    per_class: int | None = None,
    seed: int = 0,
    image_column: str | None = None,
    label_column: str | None = None,
    skip_broken: bool = False,
) -> TinySet:
    """Sample and preprocess a tiny set from any supported source.

    Args:
        source: a `datasets.Dataset`, a torch Dataset or DataLoader, an (N, C, H, W) tensor, or a `TinySet`.
        transform: applied to PIL images (the model's eval transform); tensors are used as they are.
        num_samples: how many examples to draw (seeded); all when None.
        per_class: draw this many examples of every class instead (needs labels; `datasets` sources only).
        seed: seeds the draw.
        image_column: for `datasets`, the column of images (detected when None).
        label_column: for `datasets`, the column of labels (detected when None; labels are optional).
        skip_broken: leave out images that cannot be decoded (logged, and listed in `TinySet.skipped`) instead
            of failing on the first one.
    """
    if isinstance(source, TinySet):
        return source
    skipped: list[str] = []
    label_problem: str | None = None
    if isinstance(source, DataLoader):
        batches = [_split_batch(b) for b in source]
        if not batches:
            raise ValueError("The DataLoader yielded no batches: the tiny set is empty.")
        images = torch.cat([b[0] for b in batches])
        labels = torch.cat([b[1] for b in batches])
        idx = sample_indices(len(images), num_samples, seed)
        images, labels = images[idx], labels[idx]
        desc = f"DataLoader({type(source.dataset).__name__})"
    else:
        ds = as_torch_dataset(source, transform=transform, image_column=image_column, label_column=label_column)
        label_problem = getattr(ds, "label_problem", None)
        if per_class is not None:
            if isinstance(ds, _HFImages) and ds.label_problem:
                raise ValueError(f"`per_class` sampling needs class ids. {ds.label_problem}")
            if not isinstance(ds, _HFImages) or ds.label_column is None:
                raise ValueError("`per_class` sampling needs a `datasets.Dataset` with a label column.")
            idx = sample_per_class([ds.class_id(y) for y in source[ds.label_column]], per_class, seed)
        else:
            idx = sample_indices(len(ds), num_samples, seed)
        items, kept = [], []
        for i in idx:
            try:
                items.append(ds[i])
            except BrokenImageError as e:
                if not skip_broken:
                    raise
                skipped.append(e.public)
                logger.warning("tiny set: left out %s, which cannot be decoded", e.where)
                continue
            kept.append(i)
        if not items:
            raise ValueError(f"None of the {len(idx)} sampled images could be decoded: {', '.join(skipped[:5])} ...")
        idx = kept
        images = torch.stack([torch.as_tensor(x) for x, _ in items])
        labels = torch.tensor([y for _, y in items], dtype=torch.long)
        desc = describe_source(source)["name"]
    if images.ndim != 4:
        raise ValueError(
            f"Images must be (C, H, W) tensors after the transform; got batch shape {tuple(images.shape)}."
        )
    has_labels = bool((labels != NO_LABEL).all())
    return TinySet(
        images=images.float().contiguous(),
        labels=labels.long() if has_labels else None,
        indices=list(idx),
        source=str(desc),
        fingerprint=_fingerprint(images),
        skipped=skipped,
        label_problem=None if has_labels else label_problem,
    )


def _split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, dict):
        x = batch.get("pixel_values", batch.get("image"))
        y = batch.get("label", batch.get("labels"))
    elif isinstance(batch, (tuple, list)):
        x, y = batch[0], (batch[1] if len(batch) > 1 else None)
    else:
        x, y = batch, None
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"Batches must hold image tensors; got {type(x).__name__}.")
    check_float_images(x)
    if y is None:
        y = torch.full((x.shape[0],), NO_LABEL, dtype=torch.long)
    return x, torch.as_tensor(y).long()


def load_image_dataset(path: str | os.PathLike, split: str | None = None) -> Any:
    """A local image dataset: a directory written by `datasets.save_to_disk`, or an imagefolder (a sub-folder
    of images per class). Returns the `datasets.Dataset` of the chosen split.
    """
    import datasets

    root = Path(path)
    if root.exists() and not root.is_dir():
        raise ValueError(
            f"The dataset `{path}` is a file; pass a folder (an imagefolder: one sub-folder of images per class, or "
            "a folder written by `datasets.save_to_disk`) or a Hub dataset id (CLI: --dataset)."
        )
    if not root.is_dir():
        raise FileNotFoundError(f"Dataset directory `{path}` does not exist.")
    saved = (
        (root / "dataset_dict.json").exists() or (root / "dataset_info.json").exists() or (root / "state.json").exists()
    )
    ds = datasets.load_from_disk(str(root)) if saved else datasets.load_dataset("imagefolder", data_dir=str(root))
    ds = pick_split(ds, split, str(path))
    ds._hf_practise_path = str(path)
    return ds


def pick_split(loaded: Any, split: str | None, name: str) -> Any:
    """The `split` of a DatasetDict (default: train, or the first), refusing a missing or empty one."""
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        if split is None:
            split = "train" if "train" in loaded else next(iter(loaded))
        if split not in loaded:
            raise ValueError(f"Split `{split}` not found in `{name}`; available: {sorted(loaded)}.")
        loaded = loaded[split]
    if len(loaded) == 0:
        raise ValueError(f"The dataset `{name}` (split `{split}`) is empty.")
    return loaded


def describe_indices(indices: Sequence[int]) -> str:
    return hashlib.sha256(",".join(map(str, indices)).encode()).hexdigest()[:16]
