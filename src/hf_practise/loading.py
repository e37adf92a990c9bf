"""Models and datasets in from the Hugging Face Hub (or a local folder), safely; `load_compressed` for users.

A model is one of: a timm name (`resnet50`), `hf-hub:ORG/NAME` (a timm checkpoint on the Hub),
`local-dir:PATH` (a timm checkpoint on disk), a Hub repo id `ORG/NAME` or a local folder holding either a
timm `config.json` (with `architecture`) or a transformers one (with `model_type`). Weights are only ever
read from safetensors files, and exactly the ones that were checked: pickled checkpoints are not even
downloaded, and a `pytorch_model.bin` beside a `model.safetensors` is never read. A checkpoint whose weights do
not cover the model (missing or unexpected keys) is refused rather than left partly random. Nothing outside the
model folder is read: a config argument that names a file (timm's `checkpoint_path`), a shard index entry or a link
that leads elsewhere is refused (a Hub snapshot's links into its cache's `blobs/` are fine). Remote code runs only
when the caller passes `trust_remote_code=True`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from torch import nn

from .backbones.saved_format import FORMAT_KEY, rebuild
from .checkpoint import read_json
from .provenance import looks_like_path, public_name, weights_dtype

logger = logging.getLogger(__name__)

__all__ = ["load_compressed", "load_model", "load_dataset_source"]

# what a snapshot of a model repo may fetch: configs, safetensors weights, the card; never pickles
_ALLOW = ["*.json", "*.safetensors", "*.md", "*.txt"]
#: keys through which timm reads (or fetches) a file while it builds a model: `checkpoint_path` of
#: `create_model`, the `file` / `state_dict` / `url` of a pretrained config or its overlay, the download cache
_FILE_KEYS = frozenset({"checkpoint_path", "cache_dir", "file", "state_dict", "url", "hf_hub_id", "hf_hub_filename"})
#: endings of weight files (a constructor argument ending so names a checkpoint)
_WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors", ".npz", ".pkl", ".pickle", ".h5", ".tar", ".zip")


def _snapshot(repo_id: str, *, revision: str | None, token: str | bool | None, repo_type: str = "model") -> Path:
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(repo_id, revision=revision, token=token, allow_patterns=_ALLOW, repo_type=repo_type)
    except Exception as e:  # the Hub client raises many kinds; say what to check
        raise FileNotFoundError(
            f"Could not download `{repo_id}`{f' at revision {revision}' if revision else ''} from the Hub "
            f"({type(e).__name__}: {e}). Check the name, the revision and your token (`token=` or `huggingface-cli "
            "login`); offline, point HF_ENDPOINT at a mirror or pass a local folder."
        ) from e
    return Path(path)


def _check_safetensors(path: Path, what: str) -> None:
    """Open `path`'s header: a truncated, empty or foreign file fails here with its name, not deep in a loader
    (opening checks the header and that the data it announces fills the file)."""
    try:
        with safe_open(str(path), framework="pt"):
            pass
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(
            f"{what}: `{path.name}` is not a valid safetensors file ({e}). It may be truncated or corrupted: download "
            "or save it again."
        ) from e


def _check_inside(root: Path, path: Path, what: str, role: str) -> None:
    """Refuse `path` unless it resolves inside the model folder `root` or, for a Hub snapshot
    (`.../models--ORG--NAME/snapshots/REV`, whose files are links into the cached repo's `blobs/`), inside that
    cached repo."""
    folder = root.resolve()
    area = folder.parent.parent if folder.parent.name == "snapshots" else folder
    target = path.resolve()
    if not target.is_relative_to(area):
        raise ValueError(
            f"{what}: {role} resolves to `{target}`, outside the model folder `{root}`. hf_practise reads only files "
            "inside the model folder: put the file itself there (not a link to elsewhere) and name it relative to "
            "the folder."
        )


def _safetensors_files(root: Path, what: str) -> list[Path]:
    files = sorted(root.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"{what} has no .safetensors weights. hf_practise never unpickles checkpoints; convert it with "
            "`safetensors.torch.save_file` (or ask its author for a safetensors upload)."
        )
    for f in files:
        _check_inside(root, f, what, f"`{f.name}`")
        _check_safetensors(f, what)
    return files


def _check_shard_index(root: Path, what: str) -> None:
    """Every shard a `*.safetensors.index.json` lists must be a valid safetensors file inside the model folder:
    transformers loads the shards the index names, wherever they are, and no others."""
    for index in sorted(root.glob("*.safetensors.index.json")):
        _check_inside(root, index, what, f"`{index.name}`")
        data = read_json(index, "The weight index")
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ValueError(
                f"{what}: `{index.name}` has no `weight_map` of weight names to shard files. Save the model again."
            )
        for shard in sorted(set(weight_map.values())):
            role = f"the shard `{shard}` listed in `{index.name}`"
            _check_inside(root, root / shard, what, role)
            if not (root / shard).is_file():
                raise FileNotFoundError(f"{what}: {role} is missing. Download or save the model again.")
            _check_safetensors(root / shard, what)


def _names_a_file(value: Any) -> bool:
    return isinstance(value, str) and (
        value.startswith("~") or "/" in value or "\\" in value or value.lower().endswith(_WEIGHT_SUFFIXES)
    )


def _file_args(value: Any, where: str) -> list[str]:
    """The dotted keys under `value` (config.json's `model_args`) that name a file: a key timm reads a file
    through, or a string that is a path or a weight file's name."""
    if isinstance(value, dict):
        found = []
        for key, v in value.items():
            here = f"{where}.{key}"
            found += [here] if key in _FILE_KEYS and v not in (None, "") else _file_args(v, here)
        return found
    if isinstance(value, (list, tuple)):
        return [k for i, v in enumerate(value) for k in _file_args(v, f"{where}[{i}]")]
    return [where] if _names_a_file(value) else []


def _refuse_file_args(config: dict[str, Any], what: str) -> None:
    """timm (and transformers' TimmWrapper) pass config.json's `model_args` to `timm.create_model`, which reads
    a `checkpoint_path` wherever it lies; a pretrained config's `file` / `state_dict` names weights outside the
    folder's safetensors too. Refuse them all: the weights come from the checked safetensors files only."""
    found = _file_args(config.get("model_args"), "model_args")
    pretrained_cfg = config.get("pretrained_cfg")
    if isinstance(pretrained_cfg, dict):
        found += [f"pretrained_cfg.{k}" for k in ("file", "state_dict") if pretrained_cfg.get(k) not in (None, "")]
    if found:
        keys = ", ".join(f"`{k}`" for k in found)
        raise ValueError(
            f"{what}: config.json sets {keys}, which {'names a file' if len(found) == 1 else 'name files'} that timm "
            "would read while building the model, wherever it lies. hf_practise reads weights only from the "
            "safetensors files in the model folder: "
            f"remove {keys} from config.json and keep the weights in the folder's model.safetensors."
        )


def _dtype_name(state: dict[str, Any]) -> str:
    """The dtype a checkpoint's weights are stored in ("bfloat16"), for saving the compressed model in it."""
    return str(weights_dtype(state.values())).removeprefix("torch.")


def check_state_dict(model: nn.Module, state: dict[str, Any], what: str) -> None:
    """Load `state` into `model` strictly, refusing missing, unexpected or wrongly shaped weights by name.

    Raises:
        ValueError: the checkpoint does not match the architecture its config describes.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrongly shaped", shapes)):
        if keys:
            problems.append(f"{len(keys)} {label} ({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''})")
    if problems:
        raise ValueError(
            f"{what}: the weights do not match the architecture in config.json: {'; '.join(problems)}. The "
            "checkpoint is incomplete or belongs to another model; download or save it again."
        )
    model.load_state_dict(state, strict=True)


def _read_config(root: Path, what: str) -> dict[str, Any]:
    path = root / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{what} has no config.json: it is not a model folder.")
    _check_inside(root, path, what, "`config.json`")
    config = read_json(path, "The model config")
    if not isinstance(config, dict):
        raise ValueError(f"The model config `{path}` must be a JSON object.")
    _refuse_file_args(config, what)
    return config


def _load_timm_dir(root: Path, *, pretrained: bool, source: dict[str, Any], **kwargs: Any) -> tuple[nn.Module, dict]:
    import timm
    from safetensors.torch import load_file
    from timm.models._hub import load_model_config_from_path

    what = f"`{public_name(source.get('name_or_path', root))}`"
    if not root.is_dir():
        raise FileNotFoundError(f"Model folder `{root}` does not exist.")
    config = _read_config(root, what)
    weights = root / "model.safetensors"
    if pretrained:
        if not weights.exists():
            _safetensors_files(root, what)  # says "no safetensors" when there are none
            raise FileNotFoundError(
                f"{what} has no model.safetensors, the file a timm checkpoint keeps its weights in."
            )
        _check_inside(root, weights, what, "`model.safetensors`")
        _check_safetensors(weights, what)
    architecture = config.get("architecture")
    if not isinstance(architecture, str) or not timm.is_model(architecture):
        raise ValueError(
            f"{what}: config.json names the architecture `{architecture}`, which this timm ({timm.__version__}) does "
            "not know. Upgrade timm (`pip install -U timm`) or check the name."
        )
    pretrained_cfg, name, model_args = load_model_config_from_path(root)
    source.update(config)
    try:
        model = timm.create_model(name, pretrained=False, pretrained_cfg=pretrained_cfg, **{**model_args, **kwargs})
    except TypeError as e:
        raise ValueError(f"{what}: timm cannot build `{name}` with the model_args of config.json ({e}).") from e
    if FORMAT_KEY in config:  # saved by hf_practise for a family timm cannot rebuild: remove the listed blocks
        rebuild(model, config[FORMAT_KEY], what)
        source["removed_blocks"] = config[FORMAT_KEY].get("removed_blocks", [])
    if pretrained:
        # exactly the file checked above; timm itself would prefer a pytorch_model.bin lying beside it
        state = load_file(str(weights))
        source["dtype"] = _dtype_name(state)  # loading widens it to the model's float32: saved back in it
        check_state_dict(model, state, what)
    source.setdefault("architecture", model.pretrained_cfg.get("architecture"))
    return model, source


def _check_architectures(config: dict[str, Any], what: str) -> None:
    """Refuse a config.json without `architectures` whose model type has several image classifiers (LeViT,
    Perceiver): transformers cannot choose one and fails with "'NoneType' object is not iterable"."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    model_type = config.get("model_type")
    classes = MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.get(model_type, ())
    if isinstance(classes, (list, tuple)) and len(classes) > 1 and not config.get("architectures"):
        raise ValueError(
            f"{what}: config.json names no `architectures`, and transformers has several image classifiers for "
            f"`{model_type}` ({', '.join(classes)}); name the checkpoint's class in config.json, e.g. "
            f'"architectures": ["{classes[0]}"].'
        )


def _load_transformers_dir(root: Path, *, trust_remote_code: bool, source: dict[str, Any], **kwargs: Any):
    try:
        from transformers import AutoModelForImageClassification
    except ImportError as e:
        raise ImportError(
            "This is a transformers model; install the extra: `pip install hf-practise[transformers]`."
        ) from e
    what = f"`{public_name(source.get('name_or_path', root))}`"
    _safetensors_files(root, what)
    _check_shard_index(root, what)
    config = _read_config(root, what)
    if FORMAT_KEY in config:  # saved by hf_practise for a family transformers cannot rebuild
        return _load_transformers_compressed(root, config, what=what, source=source, **kwargs)
    _check_architectures(config, what)
    try:
        model, info = AutoModelForImageClassification.from_pretrained(
            str(root), use_safetensors=True, trust_remote_code=trust_remote_code, output_loading_info=True, **kwargs
        )
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{what}: transformers could not load this checkpoint ({type(e).__name__}: {e}).") from e
    problems = [f"{k.replace('_', ' ')}: {sorted(v)[:5]}" for k, v in info.items() if k != "error_msgs" and v]
    if problems or info.get("error_msgs"):
        raise ValueError(
            f"{what}: the weights do not match the architecture in config.json ({'; '.join(problems)}"
            f"{info.get('error_msgs') or ''}). transformers would leave those weights random; the checkpoint is "
            "incomplete or belongs to another model."
        )
    source.update(library="transformers", model_type=model.config.model_type, config=model.config.to_dict())
    return model, source


def _load_transformers_compressed(root: Path, config: dict[str, Any], *, what: str, source: dict[str, Any], **kwargs):
    """A transformers model in hf_practise's format: build the original architecture from its config, remove the
    listed blocks, load `model.safetensors` strictly."""
    from safetensors.torch import load_file
    from transformers import CONFIG_MAPPING, AutoModelForImageClassification

    entry = dict(config[FORMAT_KEY])
    model_type = entry.get("model_type")
    fields = {k: v for k, v in config.items() if k not in (FORMAT_KEY, "model_type")}
    try:
        # the config class's own `from_dict`, which knows its saved form (e.g. TimmWrapper's `num_classes`)
        model_config = CONFIG_MAPPING[model_type].from_dict(fields, **kwargs)
    except (ValueError, KeyError) as e:
        raise ValueError(
            f"{what}: hf_practise saved this `{model_type}` model, which this transformers does not know ({e}). "
            "Upgrade transformers (`pip install -U transformers`)."
        ) from e
    model = AutoModelForImageClassification.from_config(model_config)
    # where the model's preprocessor_config.json is looked up: this folder, not a `_name_or_path` of config.json
    # (nor the current directory, when it has none)
    model.name_or_path = model.config.name_or_path = str(root)
    rebuild(model, entry, what)
    weights = root / "model.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"{what} has no model.safetensors, the file hf_practise keeps its weights in.")
    _check_inside(root, weights, what, "`model.safetensors`")
    state = load_file(str(weights))
    source["dtype"] = _dtype_name(state)
    check_state_dict(model, state, what)
    source.update(
        library="transformers",
        model_type=model_type,
        config=model.config.to_dict(),
        removed_blocks=entry.get("removed_blocks", []),
    )
    return model, source


def _dispatch_dir(root: Path, *, pretrained: bool, trust_remote_code: bool, source: dict[str, Any], **kwargs: Any):
    config = _read_config(root, f"`{public_name(source['name_or_path'])}`")
    # a timm model saved through transformers (TimmWrapper, or hf_practise's format of one) names its timm
    # architecture too, but is a transformers checkpoint
    if "architecture" in config and config.get("model_type") not in ("timm_wrapper", FORMAT_KEY):
        return _load_timm_dir(root, pretrained=pretrained, source=source, **kwargs)
    if "model_type" in config:
        if config.get("auto_map") and not trust_remote_code:
            raise ValueError(
                f"`{source['name_or_path']}` needs its own Python code (`auto_map` in config.json). Read that code, "
                "then pass `trust_remote_code=True` (CLI: --trust-remote-code) if you trust it."
            )
        return _load_transformers_dir(root, trust_remote_code=trust_remote_code, source=source, **kwargs)
    raise ValueError(
        f"`{source['name_or_path']}`: config.json has neither `architecture` (timm) nor `model_type` (transformers)."
    )


def load_model(
    name_or_path: str,
    *,
    pretrained: bool = True,
    revision: str | None = None,
    token: str | bool | None = None,
    trust_remote_code: bool = False,
    **model_kwargs: Any,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model and describe where it came from (for saving and the model card).

    Returns:
        The model and its source: `name_or_path`, `hub_id` and `revision` when it came from the Hub, and the
        checkpoint's own config (timm: `architecture`, `pretrained_cfg`, `model_args`).
    """
    source: dict[str, Any] = {"name_or_path": name_or_path}
    if name_or_path.startswith("local-dir:"):
        root = Path(name_or_path[len("local-dir:") :]).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"`{name_or_path}`: the folder `{root}` does not exist.")
        return _load_timm_dir(root, pretrained=pretrained, source=source, **model_kwargs)
    if name_or_path.startswith("hf-hub:"):
        repo_id = name_or_path[len("hf-hub:") :]
        root = _snapshot(repo_id, revision=revision, token=token)
        source.update(hub_id=repo_id, revision=root.name)
        return _load_timm_dir(root, pretrained=pretrained, source=source, **model_kwargs)
    local = Path(name_or_path).expanduser()
    if local.exists() and not local.is_dir():
        raise ValueError(f"`{name_or_path}` is a file; pass the folder that holds config.json and the weights.")
    if not local.exists() and looks_like_path(name_or_path):
        raise FileNotFoundError(
            f"The model folder `{name_or_path}` does not exist. Check the path (a Hub repo id is `ORG/NAME`)."
        )
    if local.is_dir():
        return _dispatch_dir(
            local, pretrained=pretrained, trust_remote_code=trust_remote_code, source=source, **model_kwargs
        )
    if "/" in name_or_path:
        root = _snapshot(name_or_path, revision=revision, token=token)
        source.update(hub_id=name_or_path, revision=root.name)
        return _dispatch_dir(
            root, pretrained=pretrained, trust_remote_code=trust_remote_code, source=source, **model_kwargs
        )
    return _load_timm_name(
        name_or_path, pretrained=pretrained, revision=revision, token=token, source=source, **model_kwargs
    )


def load_compressed(
    path_or_repo_id: str | Path,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    **model_kwargs: Any,
) -> nn.Module:
    """Load a model saved in hf_practise's format (or any timm/transformers checkpoint) from a folder or the Hub.

    Args:
        path_or_repo_id: a local folder or a Hub repo id (`ORG/NAME`).
        revision: a branch, tag or commit of a Hub repo.
        token: a Hub token for private repos.
        **model_kwargs: passed to the model constructor.

    Returns:
        The model in eval mode, with weights loaded strictly from `model.safetensors`.
    """
    model, _ = load_model(str(path_or_repo_id), revision=revision, token=token, **model_kwargs)
    return model.eval()


def _load_timm_name(name: str, *, pretrained: bool, revision, token, source: dict[str, Any], **kwargs: Any):
    import timm

    if not timm.is_model(name.split(".")[0]):
        raise ValueError(
            f"`{name}` is neither a timm model name (this timm, {timm.__version__}, does not know it), a "
            "`local-dir:`/`hf-hub:` path, a Hub repo id (`ORG/NAME`) nor an existing folder."
        )
    if not pretrained:
        model = timm.create_model(name, pretrained=False, **kwargs)
        source["architecture"] = model.pretrained_cfg.get("architecture", name.split(".")[0])
        return model, source
    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        raise ValueError(f"timm has no Hub checkpoint for `{name}`; pass `pretrained=False` or a checkpoint path.")
    root = _snapshot(hub_id, revision=revision, token=token)
    source.update(hub_id=hub_id, revision=root.name)
    return _load_timm_dir(root, pretrained=True, source=source, **kwargs)


def load_dataset_source(
    path_or_id: str,
    split: str | None = None,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
):
    """A `datasets.Dataset` from a local folder (imagefolder or `save_to_disk`) or a Hub dataset id."""
    import datasets

    from .data import load_image_dataset, pick_split

    if Path(path_or_id).exists():
        return load_image_dataset(path_or_id, split)
    try:
        loaded = datasets.load_dataset(path_or_id, revision=revision, token=token)
    except Exception as e:
        raise FileNotFoundError(
            f"Could not load the dataset `{path_or_id}`: it is not a local folder, and the Hub said "
            f"{type(e).__name__}: {e}. Check the id, the revision and your token."
        ) from e
    ds = pick_split(loaded, split, path_or_id)
    ds._hf_practise_hub_id = path_or_id
    return ds
