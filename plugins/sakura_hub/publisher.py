"""The ``hub`` publisher: one commit to a Hugging Face Hub model repo with the weights, config,
tokenizer, model card, recipe and lineage file.

Keys in the publish stage's table: ``repo_id`` (namespace/name, or a bare name: the token owner's
namespace, so a shared recipe publishes to whoever runs it), ``private`` (for a repo it creates; an
existing repo keeps its visibility), ``revision`` (a branch, created from main when missing) or
``create_pr`` (open a pull request instead of committing to main), ``retries`` and ``retry_wait`` for
transient errors. The token comes from ``HF_TOKEN`` or the huggingface login and is never written anywhere.
Publishing an unchanged artifact makes no commit (the Hub's preupload reports every file unchanged).
"""

from __future__ import annotations

import functools
import time
from typing import Any

from pydantic import Field

from sakura_core.errors import OptionError, StageError
from sakura_core.options import Options
from sakura_core.stage import CheckEnv
from sakura_hub.ids import repo_id_problem
from sakura_hub.timeouts import ensure as ensure_timeouts
from sakura_publish.publisher import Bundle, Publisher, PublishEnv

# Weight files sakura owns in a repo it publishes to: stale ones (another shard count) are deleted.
OWNED_SUFFIXES = (".safetensors", ".safetensors.index.json")
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


class HubOptions(Options):
    """``publisher = "hub"``: one commit to a Hugging Face Hub model repo (``HF_ENDPOINT`` selects another
    server) with the token from ``HF_TOKEN`` or ``hf auth login``; an unchanged artifact makes no new commit."""

    repo_id: str
    """Model repo to publish to, ``namespace/name``, created when missing; a bare ``name`` goes to the
    namespace of the token's owner."""
    private: bool | None = None
    """Visibility of a repo sakura creates; unset: the Hub's default. An existing repo keeps its visibility."""
    revision: str | None = None
    """Branch to commit to, created from ``main`` when missing; unset: ``main``."""
    create_pr: bool = False
    """Open a pull request against ``main`` with the commit instead of committing to it (not with another
    ``revision``)."""
    retries: int = Field(3, ge=1, le=20)
    """Attempts in all (1: no retry) when the Hub fails transiently: lost connection, HTTP 408, 429 or 5xx."""
    retry_wait: float = Field(2.0, ge=0, le=300)
    """Seconds to wait before the first retry; the wait doubles after each failed attempt."""


class HubPublisher(Publisher):
    Options = HubOptions
    libraries = ("huggingface-hub",)

    def check(self, options: HubOptions, env: CheckEnv | None = None) -> None:
        problem = repo_id_problem(options.repo_id)
        if problem:
            raise OptionError("repo_id", problem)
        if options.create_pr and options.revision not in (None, "main"):
            raise OptionError("create_pr", "a pull request is opened against main: set create_pr or revision, not both")

    def external_inputs(self, options: HubOptions, recipe_dir: Any) -> dict[str, Any]:
        import os

        # Read the way huggingface_hub reads it, without importing it (plan and validate stay fast).
        return {"endpoint": os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")}

    def load_reference(self, options: HubOptions, recipe_dir: Any) -> str:
        return self._full_repo_id(options, self._token(options))

    def run(self, bundle: Bundle, options: HubOptions, env: PublishEnv) -> dict[str, Any]:
        from huggingface_hub import constants

        self.check(options)
        ensure_timeouts()
        token = self._token(options)
        options = options.model_copy(update={"repo_id": self._full_repo_id(options, token)})
        endpoint = constants.ENDPOINT
        attempt, wait = 0, options.retry_wait
        while True:
            attempt += 1
            try:
                return self._publish_once(bundle, options, env, token)
            except Exception as exc:  # noqa: BLE001 - sorted into transient / refused / other below
                status = _status(exc)
                if status in (401, 403):
                    raise StageError(
                        f"the Hub at {endpoint} refused the token for {options.repo_id} (HTTP {status}): "
                        f"it needs write access to {options.repo_id.split('/')[0]}"
                    ) from None
                if not _transient(exc, status) or attempt >= options.retries:
                    what = _describe(exc, status, token)
                    tail = f" after {attempt} attempts" if attempt > 1 else ""
                    raise StageError(
                        f"could not publish to {endpoint}/{options.repo_id}{tail}: {what}; nothing was committed, "
                        "run again to finish (uploaded files are not sent twice)"
                    ) from None
                env.log(f"transient error ({_describe(exc, status, token)}); retrying in {wait:g}s ({attempt}/{options.retries})")
                time.sleep(wait)
                wait *= 2

    @staticmethod
    def _token(options: HubOptions) -> str:
        from huggingface_hub import constants, get_token

        if constants.HF_HUB_OFFLINE:
            raise StageError(f"cannot publish {options.repo_id}: HF_HUB_OFFLINE is set (unset it to reach {constants.ENDPOINT})")
        token = get_token()
        if not token:
            raise StageError(
                f"no Hugging Face token to publish {options.repo_id}: set HF_TOKEN or run `hf auth login`"
            )
        return token

    @staticmethod
    def _full_repo_id(options: HubOptions, token: str) -> str:
        """``namespace/name``; a bare name goes to the token owner's namespace (what ``hf upload`` does)."""
        if "/" in options.repo_id:
            return options.repo_id
        from huggingface_hub import constants

        try:
            user = _token_owner(token, constants.ENDPOINT)
        except Exception as exc:  # noqa: BLE001 - any failure to ask becomes one line
            what = _describe(exc, _status(exc), token)
            raise StageError(
                f"cannot tell whose namespace {options.repo_id} goes to: the Hub at {constants.ENDPOINT} "
                f"did not say who the token belongs to ({what}); give repo_id as 'namespace/name'"
            ) from None
        return f"{user}/{options.repo_id}"

    def _publish_once(self, bundle: Bundle, options: HubOptions, env: PublishEnv, token: str) -> dict[str, Any]:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

        api = HfApi(token=token)
        repo_url = api.create_repo(options.repo_id, private=options.private, exist_ok=True, repo_type="model")
        branch = options.revision or "main"
        if options.revision and options.revision != "main":
            api.create_branch(options.repo_id, branch=options.revision, exist_ok=True)
        before = api.repo_info(options.repo_id, revision=branch).sha
        remote = set(api.list_repo_files(options.repo_id, revision=branch))
        operations: list[Any] = [
            CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in bundle.files.items()
        ]
        stale = sorted(p for p in remote if p.endswith(OWNED_SUFFIXES) and "/" not in p and p not in bundle.files)
        operations += [CommitOperationDelete(path_in_repo=p) for p in stale]
        env.log(f"uploading {len(bundle.files)} files ({bundle.total_bytes / 2**20:.1f} MiB) to {options.repo_id}@{branch}")
        info = api.create_commit(
            options.repo_id,
            operations,
            commit_message=bundle.commit_message,
            commit_description=bundle.commit_description,
            revision=None if options.create_pr else options.revision,
            create_pr=options.create_pr,
        )
        changed = bool(info.pr_url) or info.oid != before
        env.log(("committed " if changed else "unchanged: already at ") + f"{info.oid} on {options.repo_id}")
        record = {
            "repo_id": options.repo_id,
            "url": str(repo_url),
            "revision": info.pr_revision or branch,
            "commit": info.oid,
            "commit_url": info.commit_url,
            "changed": changed,
            "files": _held_files(api, options.repo_id, info.oid, bundle.files),
        }
        if info.pr_url:
            record["pr_url"] = info.pr_url
        return record


    def hub_id(self, record: dict[str, Any]) -> str | None:
        """The repo, when it is on the Hub this process talks to (``HF_ENDPOINT``)."""
        import os

        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
        repo_id = record.get("repo_id")
        return repo_id if repo_id and record.get("url") == f"{endpoint}/{repo_id}" else None

    def outdated(self, record: dict[str, Any], options: HubOptions) -> str | None:
        """One metadata call: the branch still at the published commit, or else every published file still
        there with the same content (a later commit that changed none of them is fine). Offline, unreachable,
        or another Hub than the one published to: None (it cannot tell)."""
        from huggingface_hub import HfApi, constants, get_token
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        repo_id, revision, commit = record.get("repo_id"), record.get("revision") or "main", record.get("commit")
        if constants.HF_HUB_OFFLINE or not repo_id or not commit or self.hub_id(record) is None:
            return None
        try:
            info = HfApi(token=get_token()).model_info(repo_id, revision=revision, files_metadata=True, timeout=10)
        except RepositoryNotFoundError:
            return f"{repo_id} is gone from {constants.ENDPOINT} (deleted, or the token cannot read it)"
        except RevisionNotFoundError:
            return f"{repo_id} has no {revision} any more"
        except Exception:  # noqa: BLE001 - unreachable or refused: the publication stands as recorded
            return None
        if info.sha == commit:
            return None
        held = _oids(info)
        for path, oid in (record.get("files") or {}).items():
            if held.get(path) != oid:
                what = "deleted" if path not in held else "changed"
                return f"{repo_id}@{revision} no longer holds what was published: {path} {what} since commit {commit[:10]}"
        return None


def _oids(info: Any) -> dict[str, str]:
    """What the Hub says each file of a repo holds: its LFS sha256, else its git blob id."""
    return {s.rfilename: (s.lfs.sha256 if s.lfs else s.blob_id) for s in info.siblings or []}


def _held_files(api: Any, repo_id: str, commit: str, files: dict[str, Any]) -> dict[str, str]:
    """The published files as the Hub holds them at ``commit`` (LFS sha256 or git blob id), for ``outdated``."""
    held = _oids(api.model_info(repo_id, revision=commit, files_metadata=True))
    return {path: held[path] for path in files if path in held}


@functools.lru_cache(maxsize=8)
def _token_owner(token: str, endpoint: str) -> str:
    """Who the token belongs to, asked once per process (the card and the commit both need it)."""
    from huggingface_hub import HfApi

    return HfApi(token=token, endpoint=endpoint).whoami()["name"]


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None) if response is not None else None


def _transient(exc: BaseException, status: int | None) -> bool:
    if status is not None:
        return status in TRANSIENT_STATUS
    try:
        import httpx2 as httpx
    except ImportError:  # pragma: no cover - older huggingface_hub
        import httpx  # type: ignore[no-redef]
    return isinstance(exc, (httpx.TransportError, ConnectionError, TimeoutError))


def _describe(exc: BaseException, status: int | None, token: str) -> str:
    if status is not None:
        server = ""
        try:
            server = exc.response.json().get("error", "")  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001
            pass
        text = f"HTTP {status}" + (f" ({server})" if server else "")
    else:
        lines = str(exc).strip().splitlines()
        text = f"{type(exc).__name__}" + (f": {lines[0]}" if lines else "")
        if "connection" not in text.lower() and "Protocol" in type(exc).__name__:
            text = "connection lost: " + text
    return text.replace(token, "***")
