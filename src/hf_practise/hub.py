"""Models and datasets in from the Hugging Face Hub (or a local folder), safely.

A model is one of: a timm name (`resnet50`), `hf-hub:ORG/NAME` (a timm checkpoint on the Hub),
`local-dir:PATH` (a timm checkpoint on disk), a Hub repo id `ORG/NAME` or a local folder holding either a
timm `config.json` (with `architecture`) or a transformers one (with `model_type`). Weights are only ever
read from safetensors files: pickled checkpoints are not even downloaded. Remote code runs only when the
caller passes `trust_remote_code=True`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from torch import nn

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


def _require_safetensors(root: Path, what: str) -> None:
    if not any(root.glob("*.safetensors")):
        raise FileNotFoundError(
            f"{what} has no .safetensors weights. hf_practise never unpickles checkpoints; convert it with "
            "`safetensors.torch.save_file` (or ask its author for a safetensors upload)."
        )


def _load_timm_dir(root: Path, *, pretrained: bool, source: dict[str, Any], **kwargs: Any) -> tuple[nn.Module, dict]:
    import timm

    if not (root / "config.json").exists():
        raise FileNotFoundError(f"`{root}` has no config.json; a timm checkpoint folder needs one.")
    if pretrained:
        _require_safetensors(root, f"`{source.get('name_or_path', root)}`")
    config = json.loads((root / "config.json").read_text())
    source.update(config)
    model = timm.create_model(f"local-dir:{root}", pretrained=pretrained, **kwargs)
    source.setdefault("architecture", model.pretrained_cfg.get("architecture"))
    return model, source


def _load_transformers_dir(root: Path, *, trust_remote_code: bool, source: dict[str, Any], **kwargs: Any):
    try:
        from transformers import AutoModelForImageClassification
    except ImportError as e:
        raise ImportError(
            "This is a transformers model; install the extra: `pip install hf-practise[transformers]`."
        ) from e
    _require_safetensors(root, f"`{source.get('name_or_path', root)}`")
    model = AutoModelForImageClassification.from_pretrained(
        str(root), use_safetensors=True, trust_remote_code=trust_remote_code, **kwargs
    )
    source.update(library="transformers", model_type=model.config.model_type, config=model.config.to_dict())
    return model, source


def _dispatch_dir(root: Path, *, pretrained: bool, trust_remote_code: bool, source: dict[str, Any], **kwargs: Any):
    cfg_path = root / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"`{source['name_or_path']}` has no config.json: it is not a model folder.")
    config = json.loads(cfg_path.read_text())
    if "architecture" in config:
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
        root = Path(name_or_path[len("local-dir:") :])
        return _load_timm_dir(root, pretrained=pretrained, source=source, **model_kwargs)
    if name_or_path.startswith("hf-hub:"):
        repo_id = name_or_path[len("hf-hub:") :]
        root = _snapshot(repo_id, revision=revision, token=token)
        source.update(hub_id=repo_id, revision=root.name)
        return _load_timm_dir(root, pretrained=pretrained, source=source, **model_kwargs)
    local = Path(name_or_path)
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
            f"`{name}` is neither a timm model name, a `local-dir:`/`hf-hub:` path, a Hub repo id nor a folder."
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
