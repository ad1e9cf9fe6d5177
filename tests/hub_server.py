"""A loopback server speaking the part of the Hugging Face Hub API that
`huggingface_hub` and `datasets` use to create a dataset or model repo, upload to it
and read it back, for tests.

It keeps every repo in memory as a list of commits (each a full `path -> bytes`
snapshot), stores LFS objects by sha256, and records every request, so tests can
check what the real clients did: how many commits, which files, which uploads.
Point the clients at it with `HF_ENDPOINT` (read by `datasets` and
`huggingface_hub` at import, so set it in the environment of a fresh process) and
`HF_HUB_DISABLE_XET=1` (the Xet protocol needs a storage service not served here).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from werkzeug import Request, Response
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

LFS_SUFFIXES = (".parquet", ".png", ".jpg", ".jpeg", ".webp", ".arrow", ".safetensors")
"""Files the server asks to receive through LFS. Parquet shards must be LFS:
`datasets` deletes its temporary shard files before the commit is sent."""


@dataclass
class Commit:
    oid: str
    summary: str
    files: dict[str, bytes]
    lfs_paths: set[str]


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)

    @property
    def head(self) -> Commit:
        return self.commits[-1]


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _error(status: int, code: str, message: str) -> Response:
    return Response(
        json.dumps({"error": message}),
        status=status,
        headers={"X-Error-Code": code, "X-Error-Message": message},
        content_type="application/json",
    )


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(payload), status=status, headers=headers, content_type="application/json"
    )


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: tests read `HubServer.requests` instead."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        return None


REPO = r"(?P<repo>[^/]+/[^/]+)"
REV = r"(?P<rev>[^/]+)"
API = r"/api/(?P<kind>datasets|models)"
"""The API prefix of a dataset or a model repo."""
GIT = r"/(?:(?P<kind>datasets)/)?"
"""The prefix of a repo's files and git paths: `datasets/` or none (a model)."""
USER = "test-user"
"""Whom every token belongs to (`whoami`): the namespace of an id without one."""


def repo_key(repo_id: str, repo_type: str = "dataset") -> str:
    """Where `HubServer.repos` keeps a repo: a dataset by its id, a model as `models/<id>`."""
    return repo_id if repo_type == "dataset" else f"{repo_type}s/{repo_id}"


class HubServer:
    """The in-memory Hub. `url` is what `HF_ENDPOINT` must be set to."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.authorizations: set[str] = set()
        """Every `Authorization` header received (the tokens the client sent)."""
        self.unhandled: list[tuple[str, str]] = []
        self.failing_commits = 0
        """Answer this many next commit requests with HTTP 500 (fault injection)."""
        self.rate_limited_commits = 0
        """Answer this many next commit requests with HTTP 429 and `Retry-After`."""
        self.retry_after = "2"
        self.commit_attempts: list[float] = []
        """When each commit request came (`time.monotonic()`)."""
        self._lock = threading.Lock()
        self._routes: list[tuple[str, str, Callable[..., Response]]] = [
            ("GET", r"/api/agent-harnesses", self._agent_harnesses),
            ("POST", r"/api/repos/create", self._create_repo),
            ("GET", r"/api/whoami-v2", self._whoami),
            ("POST", r"/api/validate-yaml", self._validate_yaml),
            ("GET", rf"{API}/{REPO}/revision/{REV}", self._repo_info),
            ("GET", rf"{API}/{REPO}", self._repo_info),
            ("POST", rf"{API}/{REPO}/preupload/{REV}", self._preupload),
            ("POST", rf"{API}/{REPO}/commit/{REV}", self._commit),
            ("GET", rf"{API}/{REPO}/tree/{REV}(?:/(?P<path>.*))?", self._tree),
            ("POST", rf"{API}/{REPO}/paths-info/{REV}", self._paths_info),
            ("POST", rf"{GIT}{REPO}\.git/info/lfs/objects/batch", self._lfs_batch),
            ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", self._lfs_upload),
            ("GET", rf"{GIT}{REPO}/resolve/{REV}/(?P<path>.+)", self._resolve),
            ("HEAD", rf"{GIT}{REPO}/resolve/{REV}/(?P<path>.+)", self._resolve),
        ]
        self._server: BaseWSGIServer = make_server(
            "127.0.0.1", 0, self._app, threaded=True, request_handler=_QuietHandler
        )
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()

    # -- what tests look at -------------------------------------------------------

    def files(self, repo_id: str, repo_type: str = "dataset") -> dict[str, bytes]:
        return dict(self.repos[repo_key(repo_id, repo_type)].head.files)

    def commit_count(self, repo_id: str, repo_type: str = "dataset") -> int:
        return len(self.repos[repo_key(repo_id, repo_type)].commits)

    def seed(self, repo_id: str, files: dict[str, bytes], repo_type: str = "dataset") -> None:
        """A repo someone made: one commit holding `files`."""
        repo = Repo(repo_id, private=False)
        repo.commits.append(Commit(oid="1" * 40, summary="theirs", files=files, lfs_paths=set()))
        self.repos[repo_key(repo_id, repo_type)] = repo

    # -- plumbing -----------------------------------------------------------------

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        path = unquote(request.path)
        self.requests.append((request.method, path))
        self.authorizations.add(request.headers.get("Authorization", ""))
        for method, pattern, handler in self._routes:
            match = re.fullmatch(pattern, path)
            if match and request.method == method:
                with self._lock:
                    response = handler(request, **match.groupdict())
                return response(environ, start_response)
        self.unhandled.append((request.method, path))
        response = _error(404, "EntryNotFound", f"not served by the test Hub: {path}")
        return response(environ, start_response)

    def _repo(self, repo: str, kind: str | None) -> Repo | Response:
        """The repo of a route's `repo` and `kind` (`datasets`, `models`, or None: a model)."""
        key = repo_key(repo, "dataset" if kind == "datasets" else "model")
        if key not in self.repos:
            return _error(404, "RepoNotFound", f"Repository {repo} not found")
        return self.repos[key]

    def _commit_at(self, repo: Repo, rev: str) -> Commit | Response:
        if rev in ("main", repo.head.oid):
            return repo.head
        for commit in repo.commits:
            if commit.oid == rev:
                return commit
        return _error(404, "RevisionNotFound", f"Revision {rev} not found")

    def _entry(self, commit: Commit, path: str) -> dict[str, Any]:
        data = commit.files[path]
        entry: dict[str, Any] = {
            "type": "file",
            "path": path,
            "size": len(data),
            "oid": _git_blob_oid(data),
        }
        if path in commit.lfs_paths:
            sha = hashlib.sha256(data).hexdigest()
            entry["lfs"] = {"oid": sha, "size": len(data), "pointerSize": 134}
        return entry

    # -- handlers -----------------------------------------------------------------

    def _create_repo(self, request: Request) -> Response:
        body = request.get_json()
        repo_id = (
            f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        )
        if "/" not in repo_id:
            repo_id = f"{USER}/{repo_id}"
        repo_type = body.get("type") or "model"
        url = f"{self.url}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
        if repo_key(repo_id, repo_type) in self.repos:
            return _json({"error": f"You already created this {repo_type} repo", "url": url}, 409)
        repo = Repo(repo_id, private=bool(body.get("private")))
        repo.commits.append(
            Commit(oid="0" * 40, summary="initial commit", files={}, lfs_paths=set())
        )
        self.repos[repo_key(repo_id, repo_type)] = repo
        return _json({"url": url, "name": repo_id})

    def _whoami(self, request: Request) -> Response:
        return _json({"type": "user", "name": USER, "auth": {"accessToken": {"role": "write"}}})

    def _agent_harnesses(self, request: Request) -> Response:
        """huggingface_hub asks which AI-agent environments to recognise; none here."""
        return _json({"standardEnvVars": [], "harnesses": {}})

    def _validate_yaml(self, request: Request) -> Response:
        return _json({"errors": [], "warnings": []})

    def _repo_info(
        self, request: Request, repo: str, kind: str | None, rev: str = "main"
    ) -> Response:
        found = self._repo(repo, kind)
        if isinstance(found, Response):
            return found
        commit = self._commit_at(found, rev)
        if isinstance(commit, Response):
            return commit
        return _json(
            {
                "id": repo,
                "_id": repo,
                "sha": commit.oid,
                "private": found.private,
                "lastModified": "2026-01-01T00:00:00.000Z",
                "siblings": [{"rfilename": path} for path in sorted(commit.files)],
                "tags": [],
                "downloads": 0,
                "likes": 0,
            }
        )

    def _preupload(self, request: Request, repo: str, kind: str | None, rev: str) -> Response:
        found = self._repo(repo, kind)
        if isinstance(found, Response):
            return found
        files = request.get_json()["files"]
        return _json(
            {
                "files": [
                    {
                        "path": item["path"],
                        "uploadMode": "lfs" if item["path"].endswith(LFS_SUFFIXES) else "regular",
                        "shouldIgnore": False,
                    }
                    for item in files
                ],
                "commitOid": found.head.oid,
            }
        )

    def _lfs_batch(self, request: Request, repo: str, kind: str | None) -> Response:
        body = request.get_json()
        objects = []
        for item in body["objects"]:
            entry: dict[str, Any] = {"oid": item["oid"], "size": item["size"]}
            if item["oid"] not in self.lfs_objects:
                entry["actions"] = {"upload": {"href": f"{self.url}/lfs-upload/{item['oid']}"}}
            objects.append(entry)
        return _json({"transfer": "basic", "objects": objects})

    def _lfs_upload(self, request: Request, oid: str) -> Response:
        data = request.get_data()
        if hashlib.sha256(data).hexdigest() != oid:
            return _error(400, "BadRequest", "uploaded bytes do not match the oid")
        self.lfs_objects[oid] = data
        return Response(status=200)

    def _commit(self, request: Request, repo: str, kind: str | None, rev: str) -> Response:
        found = self._repo(repo, kind)
        if isinstance(found, Response):
            return found
        self.commit_attempts.append(time.monotonic())
        if self.failing_commits:
            self.failing_commits -= 1
            return _error(500, "InternalError", "scripted failure")
        if self.rate_limited_commits:
            self.rate_limited_commits -= 1
            response = _error(429, "TooManyRequests", "slow down")
            response.headers["Retry-After"] = self.retry_after
            return response
        lines = [json.loads(line) for line in request.get_data().splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        parent = header.get("parentCommit")
        if parent and parent != found.head.oid:
            return _error(412, "PreconditionFailed", "parentCommit is not the head of main")
        files = dict(found.head.files)
        lfs_paths = set(found.head.lfs_paths)
        for line in lines:
            value = line["value"]
            if line["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
                lfs_paths.discard(value["path"])
            elif line["key"] == "lfsFile":
                if value["oid"] not in self.lfs_objects:
                    return _error(422, "LfsObjectMissing", f"LFS object of {value['path']} missing")
                files[value["path"]] = self.lfs_objects[value["oid"]]
                lfs_paths.add(value["path"])
            elif line["key"] == "deletedFile":
                files.pop(value["path"], None)
                lfs_paths.discard(value["path"])
            elif line["key"] == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                for path in [path for path in files if path.startswith(prefix)]:
                    files.pop(path)
                    lfs_paths.discard(path)
        digest = hashlib.sha1(
            json.dumps(
                [found.head.oid, sorted((p, _git_blob_oid(d)) for p, d in files.items())]
            ).encode()
        ).hexdigest()
        found.commits.append(Commit(digest, header.get("summary", ""), files, lfs_paths))
        return _json(
            {
                "commitUrl": f"{self.url}/{'datasets/' if kind == 'datasets' else ''}{repo}"
                f"/commit/{digest}",
                "commitOid": digest,
            }
        )

    def _tree(
        self, request: Request, repo: str, kind: str | None, rev: str, path: str | None = None
    ) -> Response:
        found = self._repo(repo, kind)
        if isinstance(found, Response):
            return found
        commit = self._commit_at(found, rev)
        if isinstance(commit, Response):
            return commit
        prefix = (path or "").strip("/")
        recursive = request.args.get("recursive", "false").lower() == "true"
        under = [p for p in sorted(commit.files) if not prefix or p.startswith(prefix + "/")]
        if prefix and not under:
            return _error(404, "EntryNotFound", f"{prefix} does not exist on {rev}")
        entries: dict[str, dict[str, Any]] = {}
        for file_path in under:
            relative = file_path[len(prefix) + 1 :] if prefix else file_path
            parts = relative.split("/")
            if recursive:
                for depth in range(1, len(parts)):
                    folder = "/".join(filter(None, [prefix, *parts[:depth]]))
                    entries[folder] = {"type": "directory", "path": folder, "size": 0, "oid": "0"}
                entries[file_path] = self._entry(commit, file_path)
            elif len(parts) == 1:
                entries[file_path] = self._entry(commit, file_path)
            else:
                folder = "/".join(filter(None, [prefix, parts[0]]))
                entries[folder] = {"type": "directory", "path": folder, "size": 0, "oid": "0"}
        return _json(list(entries.values()))

    def _paths_info(self, request: Request, repo: str, kind: str | None, rev: str) -> Response:
        found = self._repo(repo, kind)
        if isinstance(found, Response):
            return found
        commit = self._commit_at(found, rev)
        if isinstance(commit, Response):
            return commit
        paths = request.form.getlist("paths") or (request.get_json(silent=True) or {}).get(
            "paths", []
        )
        entries = []
        for path in paths:
            if path in commit.files:
                entries.append(self._entry(commit, path))
            elif any(p.startswith(path.rstrip("/") + "/") for p in commit.files):
                entries.append({"type": "directory", "path": path, "size": 0, "oid": "0"})
        return _json(entries)

    def _resolve(
        self, request: Request, repo: str, kind: str | None, rev: str, path: str
    ) -> Response:
        found = self._repo(repo, kind)
        if isinstance(found, Response):
            return found
        commit = self._commit_at(found, rev)
        if isinstance(commit, Response):
            return commit
        if path not in commit.files:
            return _error(404, "EntryNotFound", f"{path} does not exist on {rev}")
        data = commit.files[path]
        etag = hashlib.sha256(data).hexdigest() if path in commit.lfs_paths else _git_blob_oid(data)
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{etag}"'}
        if path in commit.lfs_paths:
            headers["X-Linked-Etag"] = f'"{etag}"'
            headers["X-Linked-Size"] = str(len(data))
        status = 200
        range_header = request.headers.get("Range")
        if range_header and request.method == "GET":
            start_text, end_text = range_header.removeprefix("bytes=").split("-")
            start = int(start_text)
            end = int(end_text) if end_text else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data = data[start : end + 1]
            status = 206
        body = b"" if request.method == "HEAD" else data
        response = Response(body, status=status, headers=headers)
        response.headers["Content-Length"] = str(len(data))
        return response
