"""A Hugging Face Hub on loopback for the tests: `olah` serving local git repos over real HTTP.

olah serves `mirrors/<models|datasets>/ORG/NAME` git repos read-only and refuses uploads, so uploads are
tested by committing the folder into the mirror (`publish`) in place of `HfApi.upload_folder`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

GIT = ["git", "-c", "user.email=tests@hf-practise", "-c", "user.name=tests", "-c", "init.defaultBranch=main"]


def olah_cli() -> str | None:
    exe = Path(sys.executable).with_name("olah-cli")
    return str(exe) if exe.exists() else shutil.which("olah-cli")


def publish(mirrors: str | Path, repo_type: str, repo_id: str, folder: str | Path, revision: str | None = None) -> str:
    """Commit the files of `folder` as the new state of `repo_id` (of its branch `revision`, default main) in the
    mirror; return the commit sha."""
    repo = Path(mirrors) / f"{repo_type}s" / repo_id
    repo.mkdir(parents=True, exist_ok=True)
    if not (repo / ".git").exists():
        subprocess.run([*GIT, "init", "-q"], cwd=repo, check=True)
    if revision not in (None, "main"):
        try:
            subprocess.run([*GIT, "checkout", "-q", "-B", revision], cwd=repo, check=True)
            return publish(mirrors, repo_type, repo_id, folder)
        finally:
            subprocess.run([*GIT, "checkout", "-q", "main"], cwd=repo, check=True)
    for child in repo.iterdir():
        if child.name != ".git":
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    shutil.copytree(folder, repo, dirs_exist_ok=True)
    subprocess.run([*GIT, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-q", "--allow-empty", "-m", "upload"], cwd=repo, check=True)
    return subprocess.run(
        [*GIT, "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


class LocalHub:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.mirrors = root / "mirrors"
        self.mirrors.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> LocalHub:
        (self.root / "configs.toml").write_text(
            f'[basic]\nhost = "127.0.0.1"\nport = {self.port}\nmirror-netloc = "127.0.0.1:{self.port}"\n'
            f'mirrors-path = ["{self.mirrors}"]\n[accessibility]\noffline = true\n'
        )
        self.log = open(self.root / "olah.log", "w")
        self.proc = subprocess.Popen(
            [olah_cli(), "-c", "configs.toml"], cwd=self.root, stdout=self.log, stderr=self.log
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/api/agent-harnesses", timeout=1)
                return self
            except Exception:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"olah did not start; see {self.root / 'olah.log'}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None

    def env(self, home: Path) -> dict[str, str]:
        """Environment for a subprocess that talks to this hub (a fresh HF cache under `home`)."""
        env = dict(os.environ)
        env.update(
            HF_ENDPOINT=self.url,
            HF_HOME=str(home),
            HF_HUB_OFFLINE="0",
            HF_DATASETS_OFFLINE="0",
            HF_HUB_DISABLE_TELEMETRY="1",
            PRACTISE_TEST_MIRRORS=str(self.mirrors),
        )
        return env
