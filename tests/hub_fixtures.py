"""Pytest fixtures around tests/hub_server.py: a loopback Hub and a way to run ``sakura`` against it.

huggingface_hub reads HF_ENDPOINT, HF_HUB_OFFLINE and HF_HUB_DISABLE_XET at import time and conftest.py
keeps the test process offline, so everything that talks to the Hub runs in a subprocess with its own
environment: the real client against the real server, as a user would run it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hub_server import Commit, FileEntry, HubServer, HubState, Repo, git_blob_sha1

WRITE_TOKEN = "hf_sakuraTestSECRETwrite7f3a9c"
READ_TOKEN = "hf_sakuraTestSECRETread81d2b4"
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Hub:
    server: HubServer
    state: HubState
    home: Path  # HF_HOME of the subprocesses (token file, download cache)
    xet: bool = True
    outputs: list[str] = field(default_factory=list)  # every stdout/stderr seen, for the token check

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def env(self, token: str | None = WRITE_TOKEN, offline: bool = False, home: Path | None = None, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env.update(
            HF_ENDPOINT=self.endpoint,
            HF_HOME=str(home or self.home),
            HF_HUB_OFFLINE="1" if offline else "0",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            TOKENIZERS_PARALLELISM="false",
            TRANSFORMERS_VERBOSITY="error",
        )
        if token:
            env["HF_TOKEN"] = token
        if not self.xet:
            env["HF_HUB_DISABLE_XET"] = "1"
        env.update(extra)
        return env

    def run(self, *args: str, cwd: Path | None = None, **env_args) -> subprocess.CompletedProcess:
        """``sakura ARGS`` in a subprocess against this Hub."""
        return self.python("-m", "sakura_core", *args, cwd=cwd, **env_args)

    def run_json(self, *args: str, cwd: Path | None = None, **env_args) -> dict:
        """``sakura ARGS --json`` that must succeed; its JSON document."""
        done = self.run(*args, "--json", cwd=cwd, **env_args)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout[done.stdout.index("{"):])

    def python(self, *args: str, cwd: Path | None = None, **env_args) -> subprocess.CompletedProcess:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, *args], capture_output=True, text=True, cwd=cwd or REPO_ROOT, env=self.env(**env_args),
            timeout=900,  # a recipe family run on a CPU shared with other work can take minutes
        )
        self.outputs += [done.stdout, done.stderr]
        done.seconds = time.monotonic() - started  # type: ignore[attr-defined]
        return done

    def seed_repo(self, repo_id: str, files: dict[str, bytes], repo_type: str = "model") -> str:
        """Put a repo straight into the server (e.g. one with only pickled weights); returns its commit."""
        repo = Repo(repo_type, repo_id, False, repo_id.split("/")[0])
        entries = {p: FileEntry(len(d), hashlib.sha256(d).hexdigest(), git_blob_sha1(d), False, d) for p, d in files.items()}
        commit = Commit(self.state.new_oid(repo_id), None, "seed", "", entries, "2026-01-01T00:00:00.000Z")
        repo.commits[commit.oid] = commit
        repo.refs["main"] = commit.oid
        self.state.repos[(repo_type, repo_id)] = repo
        return commit.oid

    def commit(self, repo_id: str, files: dict[str, bytes], repo_type: str = "model") -> str:
        """Someone else's commit on main, straight into the server: ``files`` added or replaced, the rest kept."""
        repo = self.state.repos[(repo_type, repo_id)]
        parent = repo.commits[repo.refs["main"]]
        entries = dict(parent.files)
        entries.update({p: FileEntry(len(d), hashlib.sha256(d).hexdigest(), git_blob_sha1(d), False, d) for p, d in files.items()})
        commit = Commit(self.state.new_oid(repo_id, "edit"), parent.oid, "edit", "", entries, "2026-01-03T00:00:00.000Z")
        repo.commits[commit.oid] = commit
        repo.refs["main"] = commit.oid
        return commit.oid

    def files(self, repo_id: str, ref: str = "main") -> dict[str, bytes]:
        repo = self.state.repos[("model", repo_id)]
        return {p: e.data for p, e in repo.commits[repo.refs[ref]].files.items()}


def _start(tmp_path: Path, lfs_threshold: int | None, xet: bool):
    state = HubState(tokens={WRITE_TOKEN: ("tester", "write"), READ_TOKEN: ("tester", "read")}, lfs_threshold=lfs_threshold)
    server = HubServer(state).start()
    home = tmp_path / "hf-home"
    home.mkdir(exist_ok=True)
    return Hub(server, state, home, xet=xet)


@pytest.fixture
def hub(tmp_path):
    """A loopback Hub answering "regular" for every file: the client's Xet-enabled path, base64 in commits."""
    hub = _start(tmp_path, lfs_threshold=None, xet=True)
    yield hub
    hub.server.stop()


@pytest.fixture
def lfs_hub(tmp_path):
    """A loopback Hub sending files of 1 KiB and more through LFS (batch, PUT, verify); Xet off in the client."""
    hub = _start(tmp_path, lfs_threshold=1024, xet=False)
    yield hub
    hub.server.stop()
