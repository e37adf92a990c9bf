"""Publishing a `CompressionResult`: the saved folder, the Hub upload and the ONNX export.

`save_pretrained` writes the family's native checkpoint (so timm / transformers reload it without hf_practise),
`practise_report.json` and the model card, to a temporary folder renamed when complete; `push_to_hub` uploads
exactly that folder. These functions read the result they are given and never import its module (the record
does not depend on how it is published the other way round: `CompressionResult`'s methods call these).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import card
from .files import atomic_write_bytes, check_output_location, save_directory_atomically
from .runtimes import export_onnx_bytes, require_backend
from .training import as_logits

if TYPE_CHECKING:
    from .result import CompressionResult

logger = logging.getLogger(__name__)

__all__ = [
    "ONNX_FILE",
    "REPORT_FILE",
    "check_replaceable_output",
    "export_onnx",
    "push_to_hub",
    "save_pretrained",
]

REPORT_FILE = "practise_report.json"
ONNX_FILE = "model.onnx"
#: the ONNX export's logits may differ from PyTorch's by this much (relative to the largest logit) before a warning
ONNX_TOLERANCE = 1e-4


#: the files `save_pretrained` wrote before reports listed them (besides its .png plots)
LEGACY_FILES = frozenset(
    {"config.json", "model.safetensors", "README.md", REPORT_FILE, ONNX_FILE, "preprocessor_config.json"}
)


def check_replaceable_output(folder: str | Path) -> None:
    """Refuse to replace `folder` unless it is an earlier output of `save_pretrained`: it carries
    `practise_report.json`, and (for outputs that list what they wrote) nothing else was added to it since.

    Raises:
        FileExistsError: naming what makes the folder someone else's and how to proceed.
    """
    folder = Path(folder)
    report = folder / REPORT_FILE
    if not report.is_file():
        raise FileExistsError(
            f"`{folder}` is not empty and is not an earlier hf_practise output (it has no {REPORT_FILE}), so "
            "--overwrite / overwrite=True will not replace it: it may hold a teacher, a dataset or your own files. "
            "Choose another output folder, or empty this one yourself."
        )
    try:
        written = json.loads(report.read_text()).get("files")
    except (OSError, ValueError, AttributeError) as e:
        raise FileExistsError(
            f"`{report}` is not a readable hf_practise report ({e}), so `{folder}` will not be replaced. Choose "
            "another output folder, or empty this one yourself."
        ) from e
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir() or p.is_symlink()}
    if written is None:  # saved before outputs listed their files: only the names that saver wrote are ours
        foreign = sorted(f for f in present if f not in LEGACY_FILES and not f.endswith(".png") or "/" in f)
    else:
        foreign = sorted(present - set(written))
    if foreign:
        raise FileExistsError(
            f"`{folder}` is an earlier hf_practise output, but holds files hf_practise did not write "
            f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}), so it will not be replaced. Move them "
            "out, or choose another output folder."
        )


@dataclass
class OnnxCheck:
    """The ONNX export of a compressed model checked against PyTorch in ONNX Runtime on `images` images."""

    file: str
    opset: int
    dynamic_batch: bool
    images: int
    images_from: str  # "tiny set", "given" or "random"
    max_abs_logit_diff: float
    relative_diff: float  # max_abs_logit_diff / the largest |logit|
    onnxruntime: str
    torch: str
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_onnx(
    result: CompressionResult, path: str | Path | None = None, *, images: torch.Tensor | None = None, opset: int = 17
) -> OnnxCheck:
    """Export the compressed model to ONNX (dynamic batch, input `pixel_values`, output `logits`) and check it
    against PyTorch in ONNX Runtime on `images` (default: the tiny-set images kept from the run).

    The file is written by `save_pretrained` (and so uploaded by `push_to_hub`) as `model.onnx`, and to `path`
    when given. Needs `pip install "hf-practise[onnx]"`.

    Returns:
        The parity record (also `result.onnx`).
    """
    require_backend("onnxruntime")
    import onnxruntime as ort

    source = "given"
    if images is None and result.check_images is not None:
        images, source = result.check_images, "tiny set"
    if images is None:
        source = "random"
        size = tuple(result.family.data_config(result.model)["input_size"])
        images = torch.randn(4, *size, generator=torch.Generator().manual_seed(0))
    images = images.detach().float().cpu()
    model = result.model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        data = export_onnx_bytes(
            model,
            (images[:2].to(device),),
            dynamic_batch=True,
            input_names=["pixel_values"],
            output_names=["logits"],
            opset=opset,
        )
        reference = as_logits(model(images.to(device))).float().cpu()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    exported = torch.from_numpy(session.run(None, {"pixel_values": images.numpy()})[0])
    diff = (exported - reference).abs().max().item()
    relative = diff / max(reference.abs().max().item(), 1e-12)
    result.onnx = OnnxCheck(
        file=ONNX_FILE,
        opset=opset,
        dynamic_batch=True,
        images=int(images.shape[0]),
        images_from=source,
        max_abs_logit_diff=diff,
        relative_diff=relative,
        onnxruntime=ort.__version__,
        torch=str(torch.__version__),
        bytes=len(data),
    )
    if relative > ONNX_TOLERANCE:
        logger.warning(
            "the ONNX export's logits differ from PyTorch's by %.3g (%.3g of the largest logit)", diff, relative
        )
    result.onnx_bytes = data
    if path is not None:
        atomic_write_bytes(Path(path), data)
    logger.info("exported ONNX: max |logit difference| %.3g (relative %.3g)", diff, relative)
    return result.onnx


def save_pretrained(
    result: CompressionResult, save_directory: str | Path, *, overwrite: bool = False, repo_id: str | None = None
) -> Path:
    """Write the compressed model so the family's own library reloads it, with its model card (README.md and
    plots) and `practise_report.json`. The folder is written to a temporary sibling and renamed when complete.

    Args:
        save_directory: the folder to write; it must not exist or be empty unless `overwrite`. It may not be,
            contain or lie inside a folder the run read (the model's, the dataset's, the work dir).
        overwrite: replace a non-empty folder, when it is an earlier output of this method (it carries
            `practise_report.json` and no file this method did not write); anything else is refused.
        repo_id: the Hub repository the card's load snippet should name (a local path otherwise).
    """
    check_output_location(save_directory, result.input_paths)
    name = repo_id.split("/")[-1] if repo_id else Path(save_directory).name

    def write(tmp: Path) -> None:
        if not result.points:
            _write_point(result, tmp, repo_id=repo_id, name=name)
            return
        # one folder per target, each as a single-target run writes it, and a card of all of them on top
        for point in result.points:
            folder = tmp / card.point_folder(point)
            folder.mkdir()
            branch = card.point_branch(point) if repo_id else None
            _write_point(point, folder, repo_id=repo_id, name=f"{name}-{card.point_folder(point)}", revision=branch)
        (tmp / "README.md").write_text(card.points_card(result, tmp, repo_id=repo_id))
        files = sorted([p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if not p.is_dir()] + [REPORT_FILE])
        rows = zip(result.points, card.beaten_by(result.points))
        report = {"points": [{**card.point_row(p, by), "folder": card.point_folder(p)} for p, by in rows]}
        (tmp / REPORT_FILE).write_text(json.dumps({**report, "files": files}, indent=2, default=str))

    path = save_directory_atomically(save_directory, write, overwrite=overwrite, may_replace=check_replaceable_output)
    result.saved_to = path
    logger.info("saved the compressed model to %s", path)
    return path


def _write_point(
    result: CompressionResult, tmp: Path, *, repo_id: str | None, name: str, revision: str | None = None
) -> None:
    result.family.save_pretrained(result.model_to_save(), tmp, source_config=result.source)
    if result.onnx_bytes is not None:
        (tmp / ONNX_FILE).write_bytes(result.onnx_bytes)
    if result.int8 is not None:  # the int8 compressed model in its runtime's format, beside the fp32 one
        for file, data in result.int8.compressed.files.items():
            (tmp / file).write_bytes(data)
    result.model_card(repo_id=repo_id, directory=tmp, name=name, revision=revision).save(tmp / "README.md")
    # written last, listing every file: the mark that lets a later --overwrite replace this folder
    files = sorted([p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if not p.is_dir()] + [REPORT_FILE])
    (tmp / REPORT_FILE).write_text(json.dumps({**result.to_dict(), "files": files}, indent=2, default=str))


def push_to_hub(
    result: CompressionResult,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload model compressed with hf_practise",
) -> str:
    """Upload exactly the folder `save_pretrained` wrote (saving to a temporary folder first if needed).

    A several-target run's folder goes to `revision` (default: main) as written, and each point's sub-folder also
    to a branch of its own (`latency-0.3`, ...), where it is a whole model that plain timm / transformers load with
    one line (`hf-hub:ORG/NAME@latency-0.3`, `from_pretrained(..., revision="latency-0.3")`): neither loads a
    model from a sub-folder of a repo, both load a branch; the points' cards name their branch.

    Returns the URL of the (main) commit. A failed upload leaves the local folder in place and says how to retry.
    """
    from huggingface_hub import HfApi

    folder = result.saved_to
    if folder is None or not folder.exists():
        folder = Path(tempfile.mkdtemp(prefix="hf_practise-")) / repo_id.split("/")[-1]
        save_pretrained(result, folder, repo_id=repo_id)
    api = HfApi(token=token)
    uploads = [(folder, revision)]
    uploads += [(folder / card.point_folder(p), card.point_branch(p)) for p in result.points]
    commits = []
    for path, branch in uploads:
        try:
            if path == folder:
                api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            else:
                api.create_branch(repo_id, branch=branch, exist_ok=True, repo_type="model")
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=str(path),
                commit_message=commit_message,
                revision=branch,
                repo_type="model",
            )
        except Exception as e:
            at = f" --revision {branch}" if branch else ""
            raise RuntimeError(
                f"Uploading {path} to {repo_id}{f' (branch {branch})' if branch else ''} failed: {e}. The compressed "
                f"model is saved in {folder}; retry with `huggingface-cli upload {repo_id} {path}{at}` or "
                f"`result.push_to_hub({repo_id!r})`."
            ) from e
        commits.append(str(getattr(info, "commit_url", info)))
    logger.info(
        "pushed %s to %s%s", folder, repo_id, f" and {len(uploads) - 1} point branches" if result.points else ""
    )
    return commits[0]
