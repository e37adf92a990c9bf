"""Models and datasets in from the Hugging Face Hub (or a local folder), safely.

A model is one of: a timm name (`resnet50`), `hf-hub:ORG/NAME` (a timm checkpoint on the Hub),
`local-dir:PATH` (a timm checkpoint on disk), a Hub repo id `ORG/NAME` or a local folder holding either a
timm `config.json` (with `architecture`) or a transformers one (with `model_type`). Weights are only ever
read from safetensors files, and exactly the ones that were checked: pickled checkpoints are not even
downloaded, and a `pytorch_model.bin` beside a `model.safetensors` is never read. A checkpoint whose weights do
not cover the model (missing or unexpected keys) is refused rather than left partly random. Remote code runs
only when the caller passes `trust_remote_code=True`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from torch import nn

from .checkpoint import read_json
from .compressed import FORMAT_KEY, rebuild
from .provenance import looks_like_path, public_name

logger = logging.getLogger(__name__)

__all__ = ["load_model", "load_dataset_source"]

# what a snapshot of a model repo may fetch: configs, safetensors weights, the card; never pickles
_ALLOW = ["*.json", "*.safetensors", "*.md", "*.txt"]


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


def _safetensors_files(root: Path, what: str) -> list[Path]:
    files = sorted(root.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"{what} has no .safetensors weights. hf_practise never unpickles checkpoints; convert it with "
            "`safetensors.torch.save_file` (or ask its author for a safetensors upload)."
        )
    for f in files:
        _check_safetensors(f, what)
    return files


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
    config = read_json(path, "The model config")
    if not isinstance(config, dict):
        raise ValueError(f"The model config `{path}` must be a JSON object.")
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
        check_state_dict(model, load_file(str(weights)), what)
    source.setdefault("architecture", model.pretrained_cfg.get("architecture"))
    return model, source


def _load_transformers_dir(root: Path, *, trust_remote_code: bool, source: dict[str, Any], **kwargs: Any):
    try:
        from transformers import AutoModelForImageClassification
    except ImportError as e:
        raise ImportError(
            "This is a transformers model; install the extra: `pip install hf-practise[transformers]`."
        ) from e
    what = f"`{public_name(source.get('name_or_path', root))}`"
    _safetensors_files(root, what)
    config = _read_config(root, what)
    if FORMAT_KEY in config:  # saved by hf_practise for a family transformers cannot rebuild
        return _load_transformers_compressed(root, config, what=what, source=source, **kwargs)
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
    rebuild(model, entry, what)
    weights = root / "model.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"{what} has no model.safetensors, the file hf_practise keeps its weights in.")
    check_state_dict(model, load_file(str(weights)), what)
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
