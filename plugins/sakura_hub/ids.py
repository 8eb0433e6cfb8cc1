"""Hub repo ids and revisions, checked without importing huggingface_hub (keeps ``validate`` fast)."""

from __future__ import annotations

import re

# The Hub's rules (huggingface_hub.utils.validate_repo_id): letters, digits, '-', '_', '.', at most 96
# characters per part, no '--' or '..', not starting or ending with '-' or '.'.
_PART = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9_])?"
REPO_ID_RE = re.compile(rf"^(?:{_PART}/)?{_PART}$")
SHA_RE = re.compile(r"^[0-9a-f]{40}$")


def repo_id_problem(repo_id: str, need_namespace: bool = False) -> str | None:
    """Why ``repo_id`` is not a valid Hub repo id, or None."""
    if not isinstance(repo_id, str) or not repo_id:
        return "a Hub repo id is 'namespace/name'"
    if need_namespace and "/" not in repo_id:
        return f"invalid Hub repo id {repo_id!r}: give it as 'namespace/name'"
    if not REPO_ID_RE.match(repo_id) or "--" in repo_id or ".." in repo_id:
        return (
            f"invalid Hub repo id {repo_id!r}: use 'namespace/name' with letters, digits, '-', '_' and '.' "
            "(no '--' or '..', at most 96 characters each)"
        )
    return None
