"""Commits in the local Hugging Face cache (``$HF_HOME/hub``), for Hub inputs resolved offline.

huggingface_hub keeps ``<type>s--<org>--<name>/refs/<revision>`` (the commit a branch or tag pointed to when
it was last fetched) and ``snapshots/<commit>/``. ``datasets.load_dataset`` fetches files by commit and
writes no ref, so the dataset stage records the ref itself once it has loaded a dataset at a commit: an
offline plan then resolves ``main`` to what the online run used.
"""

from __future__ import annotations

import os
from pathlib import Path

from sakura_core.errors import StageError
from sakura_hub.ids import SHA_RE


def repo_folder(repo_type: str, repo_id: str) -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}"


def cached_commit(repo_type: str, repo_id: str, revision: str, why: str) -> str:
    """The commit ``revision`` pointed to when ``repo_id`` was last fetched, with its files cached; else a
    one-line error saying why the Hub was not asked (``why``)."""
    from huggingface_hub import constants

    folder = repo_folder(repo_type, repo_id)
    try:
        sha = (folder / "refs" / revision).read_text().strip()
    except OSError:
        sha = ""
    if not SHA_RE.match(sha) or not (folder / "snapshots" / sha).is_dir():
        raise StageError(
            f"{repo_type} {repo_id}@{revision} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {why}; "
            "download it once online, or pin the revision to a cached commit"
        )
    return sha


def remember_commit(repo_type: str, repo_id: str, revision: str, sha: str) -> None:
    """Record in the cache that ``revision`` of ``repo_id`` is ``sha`` (as huggingface_hub does when it fetches
    by revision name), once its files at ``sha`` are cached."""
    folder = repo_folder(repo_type, repo_id)
    if revision == sha or not (folder / "snapshots" / sha).is_dir():
        return
    ref = folder / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")  # writers at once never share a temporary file
    tmp.write_text(sha)
    tmp.replace(ref)
