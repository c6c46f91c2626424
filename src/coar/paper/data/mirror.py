"""Downloads from a mirror: for clusters that keep the datasets on an internal server, and for rehearsing the
workflow offline (workflow/rehearsal).

COAR_DATA_MIRROR names the mirror: a base URL (file:///path, http://host/path). When it is set, every file
coar.paper.data downloads (Waterbirds' tarball, ImageNet-Sketch's zip, BoolQ's dev.jsonl, CIFAR-10-C's tar,
CIFAR-10's tarball) is fetched from <base>/<file name>, the file name being the last path component of the
release URL; unset, the release URLs are used unchanged.

A mirror publishes its own checksums: a file SHA256SUMS at the mirror root (sha256sum's format, a line
`<hex>  <file name>` per file) gives the expected SHA-256 of every file it lists, in place of the hash pinned
for the release (a mirror may hold a repacked or miniature copy). A download from the mirror that does not
match it is refused (CoarError naming both hashes) and deleted. A file it does not list, or a mirror without
SHA256SUMS, gets the release's own checks: the pinned hash where there is one (CIFAR-10's MD5 sums), else the
hash recorded beside the file at its first download (coar.paper.data.images.download_verified).

Record counts: BoolQ's loader checks that its file holds the release's 3,270 records; from a mirror it checks
the count the mirror publishes as dev.jsonl.count (one integer) beside the file instead (coar.paper.data.hf_text).
"""
from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

from ...errors import CoarError

ENV = "COAR_DATA_MIRROR"
SUMS = "SHA256SUMS"


def mirror_base() -> str | None:
    """The mirror's base URL (COAR_DATA_MIRROR), or None when it is unset or empty."""
    base = os.environ.get(ENV, "").strip()
    return base or None


def file_name(url: str) -> str:
    """The last path component of `url`: the name a mirror holds the file under."""
    name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    if not name:
        raise CoarError(f"download URL {url!r} names no file (its path ends in '/')")
    return name


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{urllib.parse.quote(name)}"


def mirrored(url: str) -> str:
    """`url`, or the same file name under the mirror named by the environment variable COAR_DATA_MIRROR
    (a base URL: file:///path, http://host/path) when it is set: for clusters that keep the datasets on an
    internal server, and for rehearsing the workflow offline."""
    base = mirror_base()
    return url if base is None else _join(base, file_name(url))


def _read(url: str, env: str = ENV) -> bytes | None:
    """The bytes at `url`, or None when it does not exist there (HTTP 404, a missing file)."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 410):
            return None
        raise CoarError(f"reading {url} from the mirror ({env}) failed: {exc!r}") from exc
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, FileNotFoundError):
            return None
        raise CoarError(f"reading {url} from the mirror ({env}) failed: {exc!r}") from exc
    except OSError as exc:
        raise CoarError(f"reading {url} from the mirror ({env}) failed: {exc!r}") from exc


def mirror_sha256(url: str) -> str | None:
    """The SHA-256 the mirror's SHA256SUMS lists for the file of `url`; None when no mirror is set, it has no
    SHA256SUMS, or that file is not listed. A malformed entry for the file raises CoarError."""
    base = mirror_base()
    return None if base is None else listed_sha256(base, url, ENV)


def listed_sha256(base: str, url: str, env: str = ENV) -> str | None:
    """The SHA-256 that `<base>/SHA256SUMS` lists for the file name of `url` (None: no such file or entry); `env`
    names the variable the mirror came from, for messages (coar.paper.hub's weights mirror uses this too)."""
    sums_url = _join(base, SUMS)
    data = _read(sums_url, env)
    if data is None:
        return None
    name = file_name(url)
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        parts = line.strip().split(None, 1)
        if len(parts) != 2 or parts[1].lstrip("*").removeprefix("./") != name:
            continue
        digest = parts[0].lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise CoarError(f"{sums_url}, line {number}: the entry for {name} holds {parts[0]!r}, not a SHA-256")
        return digest
    return None


def expected_sha256(url: str, pinned: str | None = None) -> str | None:
    """The SHA-256 a download of `url` must have: the mirror's (SHA256SUMS) when it lists the file, else the
    release's `pinned` one (None: the first download's hash is recorded and checked later)."""
    return mirror_sha256(url) or pinned


def check_mirrored(url: str, path: str | os.PathLike) -> Path:
    """For downloads that do not go through download_verified: `path`, just fetched from mirrored(url), must
    have the SHA-256 the mirror's SHA256SUMS lists for it (when it lists one); otherwise it is deleted and
    CoarError names both hashes."""
    from .images import sha256_file

    path = Path(path)
    expected = mirror_sha256(url)
    if expected is None:
        return path
    found = sha256_file(path)
    if found != expected:
        path.unlink(missing_ok=True)
        raise CoarError(f"download of {mirrored(url)} failed verification: the mirror's {SUMS} lists SHA-256 "
                        f"{expected}, the file has {found}; it was deleted")
    return path


def download(url: str, dest: str | os.PathLike, sha256: str | None = None) -> Path:
    """download_verified of `url` (mirrored) to `dest`, checked against the mirror's SHA-256 when it lists the
    file, else against `sha256` (the release's pinned hash; None: the hash recorded at the first download)."""
    from .images import download_verified

    listed = mirror_sha256(url)
    try:
        return download_verified(mirrored(url), dest, sha256=listed or sha256)
    except CoarError as exc:
        if listed is not None and listed in str(exc):
            raise CoarError(f"{exc} (the expected hash is the one {_join(mirror_base(), SUMS)} lists)") from exc
        raise
