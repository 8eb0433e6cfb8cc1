"""A Hugging Face Hub-compatible HTTP server for tests, standard library only.

It answers what the real ``huggingface_hub`` client (2.4) asks for model and dataset repos (see
../shared/HUB_PROTOCOL.md): create repo (``private`` or ``visibility``), validate-yaml, preupload, LFS batch + PUT + verify, NDJSON
commits (to branches or new pull requests ``refs/pr/N``), branches, refs, commits, repo info, tree,
paths-info and resolve (HEAD/GET with ranges). Everything lives in memory.

Auth: ``tokens`` maps a token to ``(user, role)`` with role ``"write"`` or ``"read"``; an unknown token is
answered 401 ("Invalid credentials in Authorization header"), a read token on a write 403.
Faults for tests: ``faults["drop_commit"] = N`` closes the connection without an answer on the next N
commit requests (after reading the whole body), ``faults["drop_put"]`` likewise for LFS uploads,
``faults["status_commit"] = (N, code)`` answers N commits with that status, ``faults["hang_commit"] = N``
reads the next N commit requests and never answers them (until the server stops).

Run standalone: ``python tests/hub_server.py --port 8999`` (token ``hf_test_write``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FileEntry:
    size: int
    sha256: str
    git_oid: str  # the blob's git sha1 (for LFS files: of the pointer file, as git would store it)
    lfs: bool
    data: bytes

    def tree_entry(self, path: str) -> dict:
        entry = {"type": "file", "path": path, "size": self.size, "oid": self.git_oid}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": 134}
        return entry


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    files: dict[str, FileEntry]
    date: str


@dataclass
class Repo:
    type: str  # "model" or "dataset"
    id: str
    private: bool
    owner: str
    refs: dict[str, str] = field(default_factory=dict)  # "main", "dev", "refs/pr/1" -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)
    prs: int = 0

    def resolve(self, rev: str) -> Commit | None:
        if rev in self.refs:
            return self.commits[self.refs[rev]]
        if re.fullmatch(r"[0-9a-f]{7,40}", rev):
            for oid, commit in self.commits.items():
                if oid.startswith(rev):
                    return commit
        return None


class HubState:
    def __init__(self, tokens: dict[str, tuple[str, str]] | None = None, lfs_threshold: int | None = None):
        self.tokens = tokens if tokens is not None else {"hf_test_write": ("tester", "write")}
        self.lfs_threshold = lfs_threshold  # None: every file "regular" (the Xet-on path); else LFS above it
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.faults: dict[str, object] = {}
        self.log: list[tuple[str, str, int]] = []  # (method, path, status)
        self.seen_tokens: list[str] = []
        self.lock = threading.RLock()
        self.counter = 0
        self.stopping = threading.Event()  # set when the server stops: a hung request ends then

    def new_oid(self, *parts: str) -> str:
        self.counter += 1
        return hashlib.sha1("\n".join([*parts, str(self.counter), str(time.time())]).encode()).hexdigest()

    def take_fault(self, name: str) -> bool:
        with self.lock:
            left = self.faults.get(name, 0)
            if isinstance(left, int) and left > 0:
                self.faults[name] = left - 1
                return True
        return False

    def commits_on(self, repo_type: str, repo_id: str, ref: str = "main") -> int:
        repo = self.repos[(repo_type, repo_id)]
        count, oid = 0, repo.refs.get(ref)
        while oid:
            count += 1
            oid = repo.commits[oid].parent
        return count


class HttpError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}


class DropConnection(Exception):
    pass


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HubServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    # -- plumbing --------------------------------------------------------------------------------
    @property
    def state(self) -> HubState:
        return self.server.state

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            return self.rfile.read(length)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return b""

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False,
              content_type: str = "application/json") -> None:
        """Answer; ``headers["Content-Length"]`` may announce a size without a body (HEAD of a file)."""
        headers = dict(headers or {})
        length = headers.pop("Content-Length", str(len(body)))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", length)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if not head and self.command != "HEAD":
            self.wfile.write(body)
        self.state.log.append((self.command, self.path, status))

    def _json(self, status: int, value: object, headers: dict | None = None) -> None:
        self._send(status, json.dumps(value).encode(), headers)

    def _handle(self) -> None:
        body = self._body()  # always read the whole body first, or keep-alive connections break
        try:
            self._route(body)
        except DropConnection:
            self.state.log.append((self.command, self.path, 0))
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass
        except HttpError as exc:
            headers = {"X-Error-Message": exc.message}
            if exc.code:
                headers["X-Error-Code"] = exc.code
            self._json(exc.status, {"error": exc.message, **exc.extra}, headers)

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle()

    # -- auth ------------------------------------------------------------------------------------
    def _user(self, required: str | None = None) -> str | None:
        """The token's user; ``required`` = "read" or "write" makes a missing/weak token an error."""
        header = self.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else None
        if token:
            self.state.seen_tokens.append(token)
        if token and token not in self.state.tokens:
            raise HttpError(401, "Invalid credentials in Authorization header")
        if token is None:
            if required:
                raise HttpError(401, "You must be authenticated to do this")
            return None
        user, role = self.state.tokens[token]
        if required == "write" and role != "write":
            raise HttpError(403, "You don't have the rights to write to this repo: this token is read-only")
        return user

    def _repo(self, repo_type: str, repo_id: str, write: bool = False) -> Repo:
        user = self._user("write" if write else None)
        repo = self.state.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and user != repo.owner):
            raise HttpError(404, "Repository not found", "RepoNotFound")
        if write and repo.owner != user and repo.id.split("/")[0] != user:
            raise HttpError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    # -- routing ---------------------------------------------------------------------------------
    def _route(self, body: bytes) -> None:
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        method = self.command
        m = None
        if path == "/api/repos/create" and method == "POST":
            return self._create_repo(json.loads(body or b"{}"))
        if path == "/api/validate-yaml" and method == "POST":
            return self._json(200, {"errors": [], "warnings": []})
        if path == "/api/whoami-v2" and method == "GET":
            user = self._user("read")
            return self._json(200, {"name": user, "type": "user", "auth": {"accessToken": {"role": self.state.tokens[self.headers["Authorization"][7:]][1]}}})
        if m := re.fullmatch(r"/lfs-upload/([0-9a-f]{64})", path):
            return self._lfs_put(m[1], body)
        if m := re.fullmatch(r"/lfs-verify/([0-9a-f]{64})", path):
            if m[1] not in self.state.lfs_objects:
                raise HttpError(404, "object not uploaded")
            return self._json(200, {})
        if m := re.fullmatch(r"/(datasets/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch", path):
            return self._lfs_batch("dataset" if m[1] else "model", m[2], json.loads(body))
        if m := re.fullmatch(r"/api/(model|dataset)s/([^/]+/[^/]+?)(/.*)?", path):
            return self._api(m[1], m[2], m[3] or "", method, query, body)
        if m := re.fullmatch(r"/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            return self._resolve("dataset" if m[1] else "model", m[2], unquote(m[3]), unquote(m[4]), method)
        raise HttpError(404, f"no route for {method} {path}")

    def _api(self, repo_type: str, repo_id: str, rest: str, method: str, query: dict, body: bytes) -> None:
        if rest in ("", "/") and method == "GET":
            return self._info(self._repo(repo_type, repo_id), "main")
        if m := re.fullmatch(r"/revision/(.+)", rest):
            return self._info(self._repo(repo_type, repo_id), unquote(m[1]))
        if m := re.fullmatch(r"/preupload/(.+)", rest):
            return self._preupload(self._repo(repo_type, repo_id, write=True), unquote(m[1]), json.loads(body))
        if m := re.fullmatch(r"/commit/(.+)", rest):
            return self._commit(self._repo(repo_type, repo_id, write=True), unquote(m[1]), body, "create_pr" in query)
        if m := re.fullmatch(r"/branch/(.+)", rest):
            return self._branch(self._repo(repo_type, repo_id, write=True), unquote(m[1]), json.loads(body or b"{}"))
        if rest == "/refs":
            return self._refs(self._repo(repo_type, repo_id), "include_prs" in query)
        if m := re.fullmatch(r"/commits/(.+)", rest):
            return self._commits(self._repo(repo_type, repo_id), unquote(m[1]))
        if m := re.fullmatch(r"/tree/([^/]+)(/.*)?", rest):
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            return self._tree(self._repo(repo_type, repo_id), unquote(m[1]), unquote((m[2] or "/")[1:]), recursive)
        if m := re.fullmatch(r"/paths-info/(.+)", rest):
            return self._paths_info(self._repo(repo_type, repo_id), unquote(m[1]), body)
        raise HttpError(404, f"no route for {method} /api/{repo_type}s/{repo_id}{rest}")

    # -- endpoints -------------------------------------------------------------------------------
    def _create_repo(self, payload: dict) -> None:
        user = self._user("write")
        name = payload.get("name", "")
        namespace = payload.get("organization") or user
        repo_type = payload.get("type") or "model"
        if repo_type not in ("model", "dataset"):
            raise HttpError(400, f"unsupported repo type {repo_type}")
        if not NAME_RE.match(name) or not NAME_RE.match(namespace or ""):
            raise HttpError(400, f"invalid repo name {namespace}/{name}")
        if namespace != user:
            raise HttpError(403, f"You don't have the rights to create a repo under {namespace}")
        repo_id = f"{namespace}/{name}"
        url = f"{self.endpoint}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
        with self.state.lock:
            if (repo_type, repo_id) in self.state.repos:
                raise HttpError(409, "You already created this repo", extra={"url": url})
            private = bool(payload.get("private")) or payload.get("visibility") == "private"
            repo = Repo(repo_type, repo_id, private, user)
            first = Commit(self.state.new_oid(repo_id, "init"), None, "initial commit", "", {}, _now())
            repo.commits[first.oid] = first
            repo.refs["main"] = first.oid
            self.state.repos[(repo_type, repo_id)] = repo
        self._json(200, {"url": url, "name": repo_id})

    def _info(self, repo: Repo, rev: str) -> None:
        commit = repo.resolve(rev)
        if commit is None:
            raise HttpError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        siblings = []
        for path, entry in sorted(commit.files.items()):
            sibling = {"rfilename": path, "size": entry.size, "blobId": entry.git_oid}
            if entry.lfs:
                sibling["lfs"] = {"sha256": entry.sha256, "size": entry.size, "pointerSize": 134}
            siblings.append(sibling)
        info = {
            "_id": repo.id, "id": repo.id, "author": repo.id.split("/")[0], "sha": commit.oid, "private": repo.private,
            "disabled": False, "gated": False, "lastModified": commit.date, "createdAt": commit.date,
            "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
        }
        card = _card_data(commit.files.get("README.md"))
        if card:
            info["cardData"] = card
        self._json(200, info)

    def _preupload(self, repo: Repo, rev: str, payload: dict) -> None:
        commit = repo.resolve(rev) or repo.resolve("main")
        files = []
        for item in payload.get("files", []):
            lfs = self.state.lfs_threshold is not None and item["size"] >= self.state.lfs_threshold
            answer = {"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False}
            remote = commit.files.get(item["path"]) if commit else None
            if remote is not None:
                answer["oid"] = remote.sha256 if lfs else git_blob_sha1(remote.data)
            files.append(answer)
        self._json(200, {"files": files, "commitOid": commit.oid if commit else None})

    def _lfs_batch(self, repo_type: str, repo_id: str, payload: dict) -> None:
        self._repo(repo_type, repo_id, write=payload.get("operation") == "upload")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], obj["size"]
            answer = {"oid": oid, "size": size, "authenticated": True}
            if oid not in self.state.lfs_objects:
                answer["actions"] = {
                    "upload": {"href": f"{self.endpoint}/lfs-upload/{oid}"},
                    "verify": {"href": f"{self.endpoint}/lfs-verify/{oid}"},
                }
            objects.append(answer)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}).encode(),
                   content_type="application/vnd.git-lfs+json")

    def _lfs_put(self, oid: str, body: bytes) -> None:
        if self.state.take_fault("drop_put"):
            raise DropConnection
        if hashlib.sha256(body).hexdigest() != oid:
            raise HttpError(400, "content does not match its oid")
        self.state.lfs_objects[oid] = body
        self._send(200)

    def _commit(self, repo: Repo, rev: str, body: bytes, create_pr: bool) -> None:
        if self.state.take_fault("drop_commit"):
            raise DropConnection
        if self.state.take_fault("hang_commit"):
            self.state.stopping.wait()  # a server that took the request and never answers
            raise DropConnection
        fault = self.state.faults.get("status_commit")
        if isinstance(fault, tuple) and fault[0] > 0:
            self.state.faults["status_commit"] = (fault[0] - 1, fault[1])
            raise HttpError(fault[1], "injected failure")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next((line["value"] for line in lines if line["key"] == "header"), None)
        if header is None:
            raise HttpError(400, "commit without a header line")
        with self.state.lock:
            if create_pr:
                base = repo.resolve(rev)
                if base is None:
                    raise HttpError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
                repo.prs += 1
                ref = f"refs/pr/{repo.prs}"
                repo.refs[ref] = base.oid
            else:
                ref = rev
                if ref not in repo.refs:
                    raise HttpError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            parent = repo.commits[repo.refs[ref]]
            expected = header.get("parentCommit")
            if expected and not parent.oid.startswith(expected):
                raise HttpError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(parent.files)
            for line in lines:
                key, value = line["key"], line.get("value", {})
                if key == "file":
                    data = base64.b64decode(value["content"]) if value.get("encoding") == "base64" else value["content"].encode()
                    files[value["path"]] = FileEntry(len(data), hashlib.sha256(data).hexdigest(), git_blob_sha1(data), False, data)
                elif key == "lfsFile":
                    data = self.state.lfs_objects.get(value["oid"])
                    if data is None:
                        raise HttpError(422, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{value['oid']}\nsize {len(data)}\n".encode()
                    files[value["path"]] = FileEntry(len(data), value["oid"], git_blob_sha1(pointer), True, data)
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: e for p, e in files.items() if not p.startswith(prefix)}
            commit = Commit(
                self.state.new_oid(repo.id, parent.oid, header.get("summary", "")),
                parent.oid, header.get("summary", ""), header.get("description", ""), files, _now(),
            )
            repo.commits[commit.oid] = commit
            repo.refs[ref] = commit.oid
        prefix = "datasets/" if repo.type == "dataset" else ""
        answer = {"commitOid": commit.oid, "commitUrl": f"{self.endpoint}/{prefix}{repo.id}/commit/{commit.oid}", "success": True}
        if create_pr:
            answer["pullRequestUrl"] = f"{self.endpoint}/{prefix}{repo.id}/discussions/{repo.prs}"
        self._json(200, answer)

    def _branch(self, repo: Repo, branch: str, payload: dict) -> None:
        if self.command != "POST":
            raise HttpError(405, "only branch creation is supported")
        with self.state.lock:
            if branch in repo.refs:
                raise HttpError(409, f"Branch {branch} already exists")
            start = repo.resolve(payload.get("startingPoint") or "main")
            if start is None:
                raise HttpError(404, "Invalid starting point", "RevisionNotFound")
            repo.refs[branch] = start.oid
        self._json(200, {})

    def _refs(self, repo: Repo, include_prs: bool) -> None:
        branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": oid} for n, oid in repo.refs.items() if not n.startswith("refs/")]
        answer = {"branches": branches, "converts": [], "tags": []}
        if include_prs:
            answer["pullRequests"] = [{"name": n, "ref": n, "targetCommit": oid} for n, oid in repo.refs.items() if n.startswith("refs/pr/")]
        self._json(200, answer)

    def _commits(self, repo: Repo, rev: str) -> None:
        commit = repo.resolve(rev)
        if commit is None:
            raise HttpError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        out = []
        while commit is not None:
            out.append({"id": commit.oid, "title": commit.title, "message": commit.message, "authors": [], "date": commit.date})
            commit = repo.commits.get(commit.parent) if commit.parent else None
        self._json(200, out)

    def _tree(self, repo: Repo, rev: str, prefix: str, recursive: bool) -> None:
        commit = repo.resolve(rev)
        if commit is None:
            raise HttpError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        prefix = prefix.strip("/")
        base = prefix + "/" if prefix else ""
        entries: dict[str, dict] = {}
        for path, entry in sorted(commit.files.items()):
            if not path.startswith(base):
                continue
            rest = path[len(base):].split("/")
            for depth in range(1, len(rest)):
                folder = base + "/".join(rest[:depth])
                if depth == 1 or recursive:
                    entries.setdefault(folder, {"type": "directory", "path": folder, "oid": hashlib.sha1(folder.encode()).hexdigest()})
            if len(rest) == 1 or recursive:
                entries[path] = entry.tree_entry(path)
        if prefix and not entries and prefix not in commit.files:
            raise HttpError(404, f"{prefix} does not exist", "EntryNotFound")
        self._json(200, list(entries.values()))

    def _paths_info(self, repo: Repo, rev: str, body: bytes) -> None:
        commit = repo.resolve(rev)
        if commit is None:
            raise HttpError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        if self.headers.get("Content-Type", "").startswith("application/json"):
            paths = json.loads(body or b"{}").get("paths", [])
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        out = []
        for path in paths:
            if path in commit.files:
                out.append(commit.files[path].tree_entry(path))
            elif any(p.startswith(path.rstrip("/") + "/") for p in commit.files):
                out.append({"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest()})
        self._json(200, out)

    def _resolve(self, repo_type: str, repo_id: str, rev: str, path: str, method: str) -> None:
        repo = self._repo(repo_type, repo_id)
        commit = repo.resolve(rev)
        if commit is None:
            raise HttpError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        entry = commit.files.get(path)
        if entry is None:
            raise HttpError(404, f"{path} does not exist at {rev}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{entry.sha256 if entry.lfs else entry.git_oid}"',
                   "Accept-Ranges": "bytes"}
        if entry.lfs:
            headers["X-Linked-Etag"] = f'"{entry.sha256}"'
            headers["X-Linked-Size"] = str(entry.size)
        data, status = entry.data, 200
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match and method == "GET":
            start = int(match[1])
            end = int(match[2]) if match[2] else entry.size - 1
            data, status = entry.data[start : end + 1], 206
            headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
        headers["Content-Length"] = str(len(data))
        self._send(status, data, headers, head=method == "HEAD", content_type="application/octet-stream")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def _card_data(readme: FileEntry | None) -> dict:
    """Flat ``key: value`` pairs of a README's YAML front matter (enough for license, library_name)."""
    if readme is None:
        return {}
    text = readme.data.decode("utf-8", "replace")
    if not text.startswith("---\n") or "\n---" not in text[4:]:
        return {}
    out = {}
    for line in text[4 : text.index("\n---", 3)].splitlines():
        key, sep, value = line.partition(":")
        if sep and key and not key.startswith((" ", "-")) and value.strip():
            out[key.strip()] = value.strip().strip("'\"")
    return out


class HubServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, state: HubState, host: str = "127.0.0.1", port: int = 0):
        self.state = state
        super().__init__((host, port), HubHandler)
        self.thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        self.thread = threading.Thread(target=self.serve_forever, name="hub-server", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.state.stopping.set()
        self.shutdown()
        self.server_close()


if __name__ == "__main__":  # pragma: no cover - manual use
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8999)
    parser.add_argument("--lfs-threshold", type=int, default=None)
    args = parser.parse_args()
    server = HubServer(HubState(lfs_threshold=args.lfs_threshold), port=args.port)
    print(f"serving on {server.endpoint} (token hf_test_write)")
    server.serve_forever()
