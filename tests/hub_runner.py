"""Run examples/compress.py with Hub uploads committed into the local test hub's mirror (olah refuses them)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

from huggingface_hub import HfApi

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "examples"))

from hub_server import publish  # noqa: E402


def create_repo(self, repo_id, **kwargs):
    return SimpleNamespace(repo_id=repo_id)


def create_branch(self, repo_id, *, branch, **kwargs):
    return None  # `upload_folder(revision=branch)` makes the git branch in the mirror


def upload_folder(self, *, repo_id, folder_path, revision=None, **kwargs):
    if os.environ.get("PRACTISE_TEST_FAIL_UPLOAD"):
        raise ConnectionError("simulated network failure")
    sha = publish(os.environ["PRACTISE_TEST_MIRRORS"], "model", repo_id, folder_path, revision=revision)
    return SimpleNamespace(commit_url=f"{os.environ['HF_ENDPOINT']}/{repo_id}/commit/{sha}")


HfApi.create_repo = create_repo
HfApi.create_branch = create_branch
HfApi.upload_folder = upload_folder

if __name__ == "__main__":
    import compress

    sys.exit(compress.main(sys.argv[1:]))
