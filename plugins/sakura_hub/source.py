"""The ``hub`` model source: ``org/name``, ``org/name@revision`` or ``{ source = "hub", id = ..., revision = ... }``.

``fingerprint`` resolves the revision to its commit sha with one metadata call (no download); offline
(``HF_HUB_OFFLINE=1``) it reads the sha from the local Hugging Face cache, and without a cached copy it is a
clear error. ``materialize`` downloads only safetensors weights, config and tokenizer files (pickled
weights only with ``allow_pickle = true``). ``HF_ENDPOINT``, ``HF_HOME`` and ``HF_TOKEN`` are honoured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sakura_core.errors import OptionError, StageError
from sakura_core.hashing import hash_json
from sakura_core.options import Options
from sakura_core.stage import ModelSource, SourceEnv
from sakura_hub.ids import SHA_RE, repo_id_problem
from sakura_hub.timeouts import ensure as ensure_timeouts
from sakura_models import shapes
from sakura_models.weights import chosen_name

SAFE_PATTERNS = [
    "*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json",
    "tokenizer*", "special_tokens_map.json", "added_tokens.json", "chat_template.*", "*.jinja",
    "vocab.*", "merges.txt", "*.model", "*.tiktoken", "preprocessor_config.json", "LICENSE*", "README.md",
]
PICKLE_PATTERNS = ["*.bin", "*.bin.index.json", "*.pt", "*.pth"]


class HubSourceOptions(Options):
    """``"org/name"`` or ``"org/name@revision"``: a model on the Hugging Face Hub (``HF_ENDPOINT`` selects
    another server), resolved to a commit when the plan is made and downloaded as safetensors only."""

    id: str
    """Repo id on the Hub, ``org/name``."""
    revision: str = "main"
    """Branch, tag or commit: a branch or tag is resolved to its current commit at each plan (the commit is
    part of the fingerprint); offline (``HF_HUB_OFFLINE=1``) the commit comes from the local Hugging Face
    cache."""
    allow_pickle: bool = False
    """Also download pickled weights (``*.bin``, ``*.pt``, ``*.pth``) and accept a repo that has no safetensors
    (loading a pickle can run code)."""


class HubSource(ModelSource):
    Options = HubSourceOptions
    downloads = True

    def parse(self, text: str) -> dict[str, Any]:
        repo_id, _, revision = text.partition("@")
        problem = repo_id_problem(repo_id)
        if problem:
            raise OptionError(None, f"{problem} (models are 'org/name[@revision]', 'tiny:...', or a local path './dir')")
        return {"id": repo_id, **({"revision": revision} if revision else {})}

    def claims(self, text: str, recipe_dir: Path) -> bool:
        """Any other string: ``parse`` says what a Hub id looks like when it is not one."""
        return True

    def fingerprint(self, options: HubSourceOptions, env: SourceEnv) -> tuple[str, dict[str, Any]]:
        problem = repo_id_problem(options.id)
        if problem:
            raise StageError(problem)
        sha, extra = resolve_revision(options.id, options.revision, options.allow_pickle)
        lineage = {"id": options.id, "revision": options.revision, "sha": sha, **extra}
        material = {"hub": options.id, "sha": sha, "allow_pickle": options.allow_pickle}
        return hash_json(material), lineage

    def materialize(self, options: HubSourceOptions, env: SourceEnv, fingerprint: str) -> Path:
        from huggingface_hub import snapshot_download
        from huggingface_hub import constants
        from sakura_models.local import check_model_dir

        sha, _ = resolve_revision(options.id, options.revision, options.allow_pickle)
        patterns = SAFE_PATTERNS + (PICKLE_PATTERNS if options.allow_pickle else [])
        try:
            with env.reporter.task(f"downloading {options.id}@{sha[:10]} from {constants.ENDPOINT}"):
                # By revision name, so the cache records the ref (offline runs resolve it later) ...
                path = Path(snapshot_download(options.id, revision=options.revision, allow_patterns=patterns))
                if path.name != sha:  # ... unless the branch moved since the plan: take the planned commit
                    path = Path(snapshot_download(options.id, revision=sha, allow_patterns=patterns))
        except Exception as exc:  # noqa: BLE001 - every failure here is one line for the user
            raise StageError(f"could not download model {options.id}@{sha[:10]}: {_short(exc)}") from None
        check_model_dir(path, options.allow_pickle)
        return path

    def config(self, options: HubSourceOptions, env: SourceEnv, fingerprint: str) -> dict[str, Any] | None:
        """config.json alone (a few kB) at the planned commit, from the Hugging Face cache when it is there."""
        import json

        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

        sha, _ = resolve_revision(options.id, options.revision, options.allow_pickle)
        quiet = are_progress_bars_disabled()
        disable_progress_bars()
        try:
            path = hf_hub_download(options.id, "config.json", revision=sha)
            data = json.loads(Path(path).read_text())
        except Exception:  # noqa: BLE001 - no config, no estimate; never an error
            return None
        finally:
            if not quiet:
                enable_progress_bars()
        return data if isinstance(data, dict) else None

    def footprint(self, config: dict[str, Any]) -> dict[str, int] | None:
        return shapes.footprint(config)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


_RESOLVED: dict[tuple[str, str, bool, str], tuple[str, dict[str, Any]]] = {}


def resolve_revision(repo_id: str, revision: str, allow_pickle: bool) -> tuple[str, dict[str, Any]]:
    """(commit sha, extra lineage such as the license) of ``repo_id`` at ``revision``, once per process."""
    from huggingface_hub import constants

    ensure_timeouts()  # every Hub call of this source comes after this one

    key = (repo_id, revision, allow_pickle, constants.ENDPOINT)
    if key not in _RESOLVED:
        _RESOLVED[key] = _resolve_revision(repo_id, revision, allow_pickle)
    return _RESOLVED[key]


def _resolve_revision(repo_id: str, revision: str, allow_pickle: bool) -> tuple[str, dict[str, Any]]:
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    label = f"{repo_id}@{revision}"
    if SHA_RE.match(revision):
        return revision, {}
    if constants.HF_HUB_OFFLINE:
        return _cached_sha(repo_id, revision, why="HF_HUB_OFFLINE is set"), {}
    try:
        info = HfApi().model_info(repo_id, revision=revision)
    except RevisionNotFoundError:
        raise StageError(f"model {repo_id} has no revision {revision!r} on {constants.ENDPOINT}") from None
    except RepositoryNotFoundError:
        raise StageError(
            f"model {repo_id} not found on {constants.ENDPOINT} (or it is private or gated and the token cannot read it)"
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        if status in (401, 403):
            raise StageError(f"the Hub at {constants.ENDPOINT} refused the token for model {repo_id} (HTTP {status})") from None
        return _cached_sha(repo_id, revision, why=f"the Hub answered HTTP {status}"), {}
    except Exception as exc:  # noqa: BLE001 - connection errors: use the cache if there is one
        return _cached_sha(repo_id, revision, why=f"the Hub at {constants.ENDPOINT} is unreachable ({_short(exc)})"), {}
    files = [s.rfilename for s in info.siblings or []]
    picked = chosen_name(files)  # what transformers would load: a stray *.safetensors beside a pickle is not it
    if files and (picked is None or picked[1]):
        pickled = [picked[0]] if picked else [f for f in files if f.endswith((".bin", ".pt", ".pth"))]
        if pickled and not allow_pickle:
            raise StageError(
                f"model {label} has only pickled weights ({pickled[0]}); they can run code when loaded. "
                "Use a safetensors revision, or set allow_pickle = true for this model"
            )
        if not pickled:
            raise StageError(f"model {label} has no weights (*.safetensors)")
    extra: dict[str, Any] = {}
    card = info.card_data
    license = getattr(card, "license", None) if card is not None else None
    if isinstance(license, str) and license:
        extra["license"] = license
    return str(info.sha), extra


def _cached_sha(repo_id: str, revision: str, why: str) -> str:
    from sakura_hub.cache import cached_commit

    return cached_commit("model", repo_id, revision, why)
