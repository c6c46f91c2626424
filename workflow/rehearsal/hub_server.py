"""A local stand-in for the three hosts a first real run downloads from, on 127.0.0.1, so that the rehearsal's
fetches run the real download code (torch.hub, huggingface_hub, coar.paper.data.mirror) with their hash checks:

  * the Hugging Face hub (HF_ENDPOINT=<base>): the repositories of a hub cache directory (`published_hf`, the
    layout huggingface_hub writes: <type>s--<org>--<name>/{refs/main, snapshots/<commit>/...,  blobs/<hash>}),
    under the hub's own URL paths: /api/models/<repo>[/revision/<rev>], /api/models/<repo>/tree/<rev>
    (and /api/datasets/...), /<repo>/resolve/<rev>/<file> and /datasets/<repo>/resolve/<rev>/<file> with the
    headers huggingface_hub reads (X-Repo-Commit, ETag, X-Linked-Etag and X-Linked-Size for LFS files);
  * download.pytorch.org (COAR_WEIGHTS_MIRROR=<base>): /models/<file> from `published_torch` (a folder of weight
    files under their release names) and /SHA256SUMS listing them;
  * a data mirror (COAR_DATA_MIRROR=<base>/mirror): /mirror/<file> from `mirror`.

Every request is appended to `log` ("METHOD path status"), so the rehearsal can show what went through it.

    python workflow/rehearsal/hub_server.py PUBLISHED_HF PUBLISHED_TORCH MIRROR LOG   (serves until killed)
"""
from __future__ import annotations

import hashlib
import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def _git_blob_sha1(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


class Repo:
    """One repository of a hub cache folder: its commit and files (path -> blob path, LFS or not)."""

    def __init__(self, folder: Path):
        self.commit = (folder / "refs" / "main").read_text().strip()
        snap = folder / "snapshots" / self.commit
        self.files = {p.relative_to(snap).as_posix(): p.resolve() for p in sorted(snap.rglob("*")) if p.is_file()}

    def entry(self, name: str) -> dict:
        blob = self.files[name]
        size = blob.stat().st_size
        lfs = len(blob.name) == 64  # an LFS file's blob is named by its SHA-256, any other's by its git SHA-1
        out = {"type": "file", "path": name, "size": size, "oid": _git_blob_sha1(blob) if lfs else blob.name}
        if lfs:
            out["lfs"] = {"oid": blob.name, "size": size, "pointerSize": 134}
        return out


def load_repos(published_hf: Path) -> dict[tuple[str, str], Repo]:
    """(type, repo id) -> Repo for every repository folder of a hub cache (models--gpt2 -> ("model", "gpt2"))."""
    repos = {}
    for folder in sorted(Path(published_hf).glob("*s--*")):
        kind, _, rest = folder.name.partition("s--")
        repos[(kind, rest.replace("--", "/"))] = Repo(folder)
    return repos


def weight_sums(published_torch: Path) -> bytes:
    return "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
                   for p in sorted(Path(published_torch).iterdir()) if p.is_file()).encode()


def handler(repos, published_torch: Path, mirror: Path, sums: bytes, log: Path, lock: threading.Lock):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # the request log below replaces stderr lines
            pass

        def _record(self, status: int) -> None:
            with lock, open(log, "a") as fh:
                fh.write(f"{self.command} {self.path} {status}\n")

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None, ctype="application/json"):
            self._record(status)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _file(self, path: Path, headers: dict | None = None):
            if not path.is_file():
                return self._send(404, b'{"error": "not found"}', {"X-Error-Code": "EntryNotFound"})
            return self._send(200, path.read_bytes(), headers, "application/octet-stream")

        def _hub(self, parts: list[str]):
            if parts[:1] == ["api"] and len(parts) >= 3:  # /api/{models,datasets}/<repo...>[/revision|tree/<rev>]
                kind = parts[1].rstrip("s")
                rest = parts[2:]
                for i in range(len(rest), 0, -1):
                    repo = repos.get((kind, "/".join(rest[:i])))
                    if repo is not None:
                        break
                else:
                    return self._send(404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"})
                repo_id, tail = "/".join(rest[:i]), rest[i:]
                if tail[:1] == ["tree"]:
                    body = [repo.entry(n) for n in repo.files]
                    return self._send(200, json.dumps(body).encode())
                info = {"id": repo_id, "modelId": repo_id, "sha": repo.commit, "private": False,
                        "siblings": [{"rfilename": n} for n in repo.files]}
                return self._send(200, json.dumps(info).encode())
            kind = "model"
            if parts[:1] == ["datasets"]:
                kind, parts = "dataset", parts[1:]
            if "resolve" not in parts:
                return self._send(404)
            i = parts.index("resolve")
            repo = repos.get((kind, "/".join(parts[:i])))
            name = "/".join(parts[i + 2:])
            if repo is None or name not in repo.files:
                return self._send(404, b'{"error": "Entry not found"}', {"X-Error-Code": "EntryNotFound"})
            entry = repo.entry(name)
            headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{entry["oid"]}"'}
            if "lfs" in entry:
                headers.update({"X-Linked-Etag": f'"{entry["lfs"]["oid"]}"', "X-Linked-Size": str(entry["size"])})
            return self._file(repo.files[name], headers)

        def do_GET(self):
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            parts = [p for p in path.split("/") if p]
            if parts == ["SHA256SUMS"]:
                return self._send(200, sums, ctype="text/plain")
            if len(parts) >= 2 and parts[-2] == "models" and parts[0] not in ("api", "datasets") \
                    and "resolve" not in parts:  # /models/<file>, also under a prefix (a mirror without SHA256SUMS)
                return self._file(Path(published_torch) / parts[-1])
            if parts[:1] == ["mirror"] and len(parts) == 2:
                return self._file(Path(mirror) / parts[1])
            return self._hub(parts)

        do_HEAD = do_GET

    return Handler


class Server:
    """The server on 127.0.0.1 (a free port) in a background thread; `base` is its URL."""

    def __init__(self, published_hf, published_torch, mirror, log):
        self.log = Path(log)
        repos = load_repos(Path(published_hf))
        h = handler(repos, Path(published_torch), Path(mirror), weight_sums(Path(published_torch)), self.log,
                    threading.Lock())
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), h)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def environment(self) -> dict[str, str]:
        """Where the real download code is pointed: the hub, torchvision's weights host, the data mirror."""
        return {"HF_ENDPOINT": self.base, "COAR_WEIGHTS_MIRROR": self.base, "COAR_DATA_MIRROR": f"{self.base}/mirror"}

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def requests(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    with Server(*argv) as server:
        print("".join(f"export {k}={v}\n" for k, v in server.environment().items()), flush=True)
        server.thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
