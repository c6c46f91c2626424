"""Random corruptions of every file coar reads back (property-based, Hypothesis).

For each drawn case the invariant is: loading the corrupted file either raises a CoarError whose message names
the file, or returns an object that passes the checks its writer applies. Never another exception type (no
BadZipFile, UnpicklingError, KeyError, ValueError, EOFError, OSError traceback), and nothing is left beside the
file. Each valid original is written once per module and copied into a fresh directory for every example.

Corruptions: truncation at a drawn offset (0: an empty file), a drawn byte range overwritten with drawn bytes,
one bit flipped, garbage appended, the file replaced by a directory, and structured ones for .npz, .npy, .pt and
JSON files (an entry removed, an array of another dtype or shape or holding NaN, a field of the wrong type).
Offsets are drawn uniformly and, half the time, near the places where a format is fragile (zip headers and
central directory, .npy headers).
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import shutil
import struct
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from coar.attributions import Attributions
from coar.errors import CoarError
from coar.examples import Examples
from coar.gram import GramAccumulator
from coar.paper import counts
from coar.paper.data.images import check_recorded
from coar.paper.demo import DemoConfig, check_resumable
from coar.paper.efficiency import load_receipt
from coar.paper.models import build_model
from coar.paper.training import load_checkpoint, save_checkpoint
from coar.store import COMPLETE_FILE, META_FILE, ShardStore, load_shards, normalize_meta, read_meta, run_shard


def fuzz(n: int):
    """Hypothesis settings of one file type: n drawn cases, reproducible (derandomized), no deadline."""
    return settings(max_examples=n, deadline=None, derandomize=True)


# ----------------------------------------------------------------------------- corruptions


@dataclass(frozen=True)
class Truncate:
    at: int

    def apply(self, path: Path) -> None:
        path.write_bytes(path.read_bytes()[: self.at])


@dataclass(frozen=True)
class Overwrite:
    at: int
    data: bytes

    def apply(self, path: Path) -> None:
        b = bytearray(path.read_bytes())
        b[self.at: self.at + len(self.data)] = self.data
        path.write_bytes(bytes(b))


@dataclass(frozen=True)
class FlipBit:
    bit: int

    def apply(self, path: Path) -> None:
        b = bytearray(path.read_bytes())
        b[self.bit // 8] ^= 1 << (self.bit % 8)
        path.write_bytes(bytes(b))


@dataclass(frozen=True)
class Append:
    data: bytes

    def apply(self, path: Path) -> None:
        path.write_bytes(path.read_bytes() + self.data)


@dataclass(frozen=True)
class ReplaceByDirectory:
    def apply(self, path: Path) -> None:
        path.unlink()
        path.mkdir()


@dataclass(frozen=True)
class Rewrite:
    """A structured corruption: the file's new content, computed when drawn; `what` says what changed."""
    what: str
    content: bytes = field(repr=False)

    def apply(self, path: Path) -> None:
        path.write_bytes(self.content)


def fragile_offsets(data: bytes) -> list[int]:
    """Where a corruption matters most: the start (an .npy header), and in a zip archive (.npz, .pt) each
    member's local header and data start, the central directory and its end record."""
    offsets = {0, max(len(data) - 22, 0)}
    with contextlib.suppress(zipfile.BadZipFile):
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            offsets.add(z.start_dir)
            for info in z.infolist():
                name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
                offsets |= {info.header_offset, info.header_offset + 30 + name_len + extra_len}
    return sorted(o for o in offsets if o < len(data))


@functools.cache  # each strategy below is built once per original file, not once per example
def byte_corruptions(data: bytes) -> st.SearchStrategy:
    """Truncation, an overwritten range, a flipped bit, appended garbage, or a directory in the file's place."""
    n = len(data)
    near_fragile = st.builds(lambda o, d: min(o + d, n - 1), st.sampled_from(fragile_offsets(data)),
                             st.integers(0, 63))
    offset = st.integers(0, n - 1) | near_fragile
    return st.one_of(
        st.builds(Truncate, offset),
        st.builds(Overwrite, offset, st.binary(min_size=1, max_size=32)),
        st.builds(lambda o, b: FlipBit(8 * o + b), offset, st.integers(0, 7)),
        st.builds(Append, st.binary(min_size=1, max_size=64)),
        st.just(ReplaceByDirectory()),
    )


# --- structured corruptions

SCALARS = st.none() | st.booleans() | st.integers(-3, 2**40) | st.floats() | st.text(max_size=6)
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=4)
NOT_MAPPINGS = SCALARS | st.lists(JSON_VALUES, max_size=3)


def _paths(doc, prefix=()) -> list[tuple]:
    """Every key path into a JSON document's mappings (lists are entered at their first item)."""
    out = []
    items = doc.items() if isinstance(doc, dict) else ([(0, doc[0])] if isinstance(doc, list) and doc else [])
    for key, value in items:
        out.append(prefix + (key,))
        out += _paths(value, prefix + (key,))
    return out


def _edited(doc, path: tuple, value=None, drop: bool = False):
    doc = json.loads(json.dumps(doc))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if drop:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


def json_edits(doc) -> st.SearchStrategy:
    """(what, edited document): a field set to a drawn value (of another type, mostly), a field removed, or the
    whole document replaced by a value that is not a mapping."""
    paths = _paths(doc)
    keyed = [p for p in paths if not isinstance(p[-1], int)]
    options = [st.builds(lambda v: (f"document replaced by {v!r}", v), NOT_MAPPINGS)]
    if paths:
        options.append(st.builds(lambda p, v: (f"{'.'.join(map(str, p))} = {v!r}", _edited(doc, p, v)),
                                 st.sampled_from(paths), JSON_VALUES))
    if keyed:
        options.append(st.builds(lambda p: (f"{'.'.join(map(str, p))} removed", _edited(doc, p, drop=True)),
                                 st.sampled_from(keyed)))
    return st.one_of(options)


@functools.cache
def json_rewrites(data: bytes) -> st.SearchStrategy:
    return json_edits(json.loads(data)).map(lambda e: Rewrite(e[0], json.dumps(e[1], indent=1).encode()))


def _with_value(a: np.ndarray, i: int, v) -> np.ndarray:
    out = a.astype(np.float64) if not np.issubdtype(a.dtype, np.floating) else a.copy()
    with np.errstate(over="ignore"):  # 1e300 in a float32 array: inf
        out.flat[i] = v
    return out


def _first_half(x: np.ndarray) -> np.ndarray:
    rows = np.atleast_1d(x)
    return rows[: len(rows) // 2]


RESHAPES = {"ravelled": np.ravel, "with an added axis": lambda x: x[None], "a scalar": lambda x: x.ravel()[0],
            "empty": lambda x: np.atleast_1d(x)[:0], "its first half": _first_half, "transposed": lambda x: x.T}
DTYPES = ["float16", "float32", "float64", "int8", "int64", "uint8", "bool", "complex64", "U4"]


def array_variants(a: np.ndarray) -> st.SearchStrategy:
    """(what, array): `a` in another dtype, of another shape, or holding a non-finite or negative value."""
    return st.one_of(
        st.builds(lambda d: (f"cast to {d}", a.astype(d)), st.sampled_from(DTYPES)),
        st.builds(lambda r: (r, np.asarray(RESHAPES[r](a))), st.sampled_from(sorted(RESHAPES))),
        st.builds(lambda i, v: (f"[{i}] = {v}", _with_value(a, i, v)), st.integers(0, a.size - 1),
                  st.sampled_from([np.nan, np.inf, -np.inf, -1.0, 1e300])),
    )


def _npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _header_array(header) -> np.ndarray:
    return np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)


@functools.cache
def npz_rewrites(data: bytes, resign=None) -> st.SearchStrategy:
    """An .npz written by coar.io.atomic_savez with one array removed or replaced, or its JSON header edited
    (when it has one). `resign(arrays, header)`, when given, returns the header a writer would give the edited
    arrays (a fresh checksum): a consistent file holding what that writer would refuse."""
    with np.load(io.BytesIO(data)) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(bytes(arrays.pop("header")).decode()) if "header" in arrays else None
    names = sorted(arrays)

    def rewrite(what, new_arrays, new_header):
        if resign is not None and isinstance(new_header, dict):
            new_header = resign(new_arrays, new_header)
        if new_header is not None:
            new_arrays = {**new_arrays, "header": _header_array(new_header)}
        return Rewrite(what, _npz_bytes(new_arrays))

    options = [
        st.builds(lambda k: rewrite(f"{k} removed", {n: a for n, a in arrays.items() if n != k}, header),
                  st.sampled_from(names)),
        st.sampled_from(names).flatmap(lambda k: array_variants(arrays[k]).map(
            lambda v: rewrite(f"{k}: {v[0]}", {**arrays, k: v[1]}, header))),
    ]
    if header is not None:
        options += [st.just(Rewrite("header removed", _npz_bytes(arrays))),
                    json_edits(header).map(lambda e: rewrite(f"header: {e[0]}", arrays, e[1]))]
    return st.one_of(options)


@functools.cache
def npy_rewrites(data: bytes) -> st.SearchStrategy:
    a = np.load(io.BytesIO(data))

    def saved(what, arr):
        buf = io.BytesIO()
        np.save(buf, arr)
        return Rewrite(what, buf.getvalue())

    fortran = st.just(saved("Fortran order", np.asfortranarray(a))) if a.ndim == 2 else st.nothing()
    return array_variants(a).map(lambda v: saved(*v)) | fortran


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _without(mapping: dict, key) -> dict:
    return {k: v for k, v in mapping.items() if k != key}


@functools.cache
def checkpoint_rewrites(data: bytes) -> st.SearchStrategy:
    """A checkpoint whose dict lost a key, has a key of the wrong type, another architecture or arguments (a size
    argument made huge among them), or a weight removed, added, or of another dtype, shape or holding NaN."""
    ck = torch.load(io.BytesIO(data), weights_only=True)
    state, kwargs = ck["state_dict"], ck["kwargs"]

    def saved(what, **changes):
        return Rewrite(what, _torch_bytes({**ck, **changes}))

    def weight(name, variant):
        return saved(f"state_dict.{name}: {variant[0]}", state_dict={**state, name: torch.from_numpy(variant[1])})

    keys, weights = st.sampled_from(sorted(ck)), st.sampled_from(sorted(state))
    other_arch = st.sampled_from(["mlp_small", "resnet_mini", "vit_tiny", "no_such_model"]) | st.text(max_size=8)
    return st.one_of(
        st.builds(lambda k: Rewrite(f"{k} removed", _torch_bytes(_without(ck, k))), keys),
        st.builds(lambda k, v: saved(f"{k} = {v!r}", **{k: v}), keys, JSON_VALUES),
        st.builds(lambda a: saved(f"arch = {a!r}", arch=a), other_arch),
        json_edits(kwargs).map(lambda e: saved(f"kwargs: {e[0]}", kwargs=e[1])),
        st.builds(lambda k, v: saved(f"kwargs.{k} = {v}", kwargs={**kwargs, k: v}),
                  st.sampled_from(sorted(kwargs)), st.integers(2**20, 2**31)),
        st.builds(lambda k: saved(f"state_dict.{k} removed", state_dict=_without(state, k)), weights),
        st.just(saved("state_dict.extra added", state_dict={**state, "extra": torch.zeros(3)})),
        weights.flatmap(lambda k: array_variants(state[k].numpy()).filter(lambda v: v[1].dtype.kind != "U").map(
            lambda v: weight(k, v))),
    )


# ----------------------------------------------------------------------------- the invariant


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@contextlib.contextmanager
def corrupted_copy(original: Path, corruption, name: str | None = None):
    """A copy of `original` (a file, or a directory with the file `name` in it) in a fresh temporary directory,
    with `corruption` applied to that file; yields the corrupted file's path."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / original.name
        (shutil.copytree if original.is_dir() else shutil.copyfile)(original, copy)
        target = copy / name if name else copy
        corruption.apply(target)
        yield target


def _names(message: str, alternatives) -> bool:
    """Whether `message` names one of `alternatives`: a path, or a tuple of parts that must all appear."""
    return any(all(str(part) in message for part in (alt if isinstance(alt, tuple) else (alt,)))
               for alt in alternatives)


def assert_refused_or_valid(load, valid, where: Path, *names):
    """load() raises a CoarError whose message names the file (one of `names`: its path, or a tuple such as a
    shard's path and the file's name), or returns what `valid` accepts; either way nothing appears in or
    disappears from `where`. Any other exception propagates and fails the case."""
    before = _listing(where)
    try:
        result = load()
    except CoarError as exc:
        event(f"refused ({type(exc).__name__})")  # pytest --hypothesis-show-statistics: the mix of outcomes
        assert _names(str(exc), names), f"{type(exc).__name__} names none of {names}: {exc}"
    else:
        event("loaded")
        valid(result)
    assert _listing(where) == before, "the load left files behind (or removed some)"


# ----------------------------------------------------------------------------- the originals


class Originals(dict):
    def __repr__(self) -> str:  # Hypothesis prints the arguments of a failing case: keep it short
        return "originals"


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """One valid file (or directory of files) of each type, written by coar's own writers."""
    root = tmp_path_factory.mktemp("originals")
    rng = np.random.default_rng(0)
    out = Originals(attributions=root / "attr.npz", image_examples=root / "images.npz",
                    token_examples=root / "tokens.npz", checkpoint=root / "model.pt", gram=root / "gram.npz",
                    receipt=root / "train.json", demo=root / "demo", recorded=root / "download")
    Attributions(rng.normal(size=(6, 5)), rng.normal(size=6), "coar-ols", "comp-123",
                 {"lambda": [0.1, 1.0], "provenance": {"stores": ["s0"]}}).save(out["attributions"])
    Examples(rng.integers(0, 256, (4, 1, 5, 5), dtype=np.uint8), rng.integers(0, 10, 4), "image",
             {"mean": 0.5, "std": [0.25], "dataset": "fashion-mnist", "indices": [3, 1, 4, 1]}
             ).save(out["image_examples"])
    Examples(rng.integers(0, 256, (3, 6)), rng.integers(0, 256, (3, 6)), "tokens", {"dataset": "os-text"}
             ).save(out["token_examples"])
    kwargs = {"num_classes": 10, "in_channels": 1, "image_size": 28}
    save_checkpoint(out["checkpoint"], build_model("resnet_tiny", **kwargs), "resnet_tiny", kwargs,
                    {"test_accuracy": 0.5, "settings": {"lr": 0.1}})
    GramAccumulator.from_arrays(rng.random((20, 5)) < 0.5, rng.normal(size=(20, 3))).save(out["gram"])
    out["shards"] = [_complete_shard(root / "masks" / f"shard-{s}", shard=s) for s in (0, 1)]
    out["shard_data"], out["receipt_data"] = _loaded(out["shards"][:1]), _loaded(out["shards"])
    out["receipt"].write_text(json.dumps({"stores": [f"masks/shard-{s}" for s in (0, 1)], "masks": 2 * SHARD_ROWS,
                                          "alpha": 0.2}, indent=1))
    out["demo"].mkdir()
    (out["demo"] / "config.json").write_text(json.dumps(asdict(DemoConfig()), indent=2))
    out["recorded"].mkdir()
    (out["recorded"] / "data.bin").write_bytes(rng.bytes(100))
    check_recorded(out["recorded"] / "data.bin")  # the first use records its hash: data.bin.sha256
    return out


SHARD_ROWS, SHARD_C, SHARD_N = 10, 6, 4


def _complete_shard(path: Path, shard: int) -> Path:
    meta = {"model_fingerprint": "model-abc", "components_fingerprint": "comp-123", "examples_fingerprint": "ex",
            "n_components": SHARD_C, "n_examples": SHARD_N, "m": SHARD_ROWS, "alpha": 0.2, "seed": 0,
            "shard": shard, "output_fn": "margin"}
    weights = np.arange(SHARD_C * SHARD_N, dtype=np.float32).reshape(SHARD_C, SHARD_N) / 4
    with ShardStore.create_or_open(path, meta) as store:
        run_shard(store, lambda keep: keep.astype(np.float32) @ weights, progress=False)
    return path


def _loaded(shards) -> tuple[np.ndarray, np.ndarray]:
    """All masks and outputs of complete shards, checksums verified."""
    keep, out = zip(*load_shards(shards, dtype=np.float64))
    return np.concatenate(keep), np.concatenate(out)


# ----------------------------------------------------------------------------- .npz files


def _valid_attributions(attr):
    assert isinstance(attr, Attributions) and attr.problem() is None


@fuzz(300)
@given(data=st.data())
def test_attribution_file(originals, data):
    original = originals["attributions"]
    raw = original.read_bytes()
    corruption = data.draw(byte_corruptions(raw) | npz_rewrites(raw))
    with corrupted_copy(original, corruption) as path:
        assert_refused_or_valid(lambda: Attributions.load(path), _valid_attributions, path.parent, path)


def _signed(arrays: dict, header: dict) -> dict:
    """The header Examples.save would give these arrays: their fingerprint."""
    if "inputs" not in arrays or "targets" not in arrays:
        return header
    return {**header, "fingerprint": Examples(arrays["inputs"], arrays["targets"]).fingerprint()}


def _valid_examples(ex):
    assert isinstance(ex, Examples) and ex.problem() is None


@fuzz(300)
@given(data=st.data())
def test_examples_file(originals, data):
    original = originals[data.draw(st.sampled_from(["image_examples", "token_examples"]))]
    raw = original.read_bytes()
    resign = data.draw(st.sampled_from([None, _signed]))
    corruption = data.draw(byte_corruptions(raw) | npz_rewrites(raw, resign))
    with corrupted_copy(original, corruption) as path:
        assert_refused_or_valid(lambda: Examples.load(path), _valid_examples, path.parent, path)


def _valid_gram(acc):
    assert isinstance(acc, GramAccumulator) and acc.problem() is None


@fuzz(200)
@given(data=st.data())
def test_gram_accumulator_file(originals, data):
    original = originals["gram"]
    raw = original.read_bytes()
    corruption = data.draw(byte_corruptions(raw) | npz_rewrites(raw))
    with corrupted_copy(original, corruption) as path:
        assert_refused_or_valid(lambda: GramAccumulator.load(path), _valid_gram, path.parent, path)


# ----------------------------------------------------------------------------- checkpoints


def _valid_checkpoint(loaded):
    model, info = loaded
    assert isinstance(model, torch.nn.Module) and not model.training
    assert "state_dict" not in info and isinstance(info.get("meta", {}), dict)
    for name, t in (*model.named_parameters(), *model.named_buffers()):
        assert not t.is_floating_point() or bool(torch.isfinite(t).all()), f"{name} holds NaN or inf"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on a flipped protocol byte
@fuzz(400)
@given(data=st.data())
def test_checkpoint_file(originals, data):
    original = originals["checkpoint"]
    raw = original.read_bytes()
    corruption = data.draw(byte_corruptions(raw) | checkpoint_rewrites(raw))
    with corrupted_copy(original, corruption) as path:
        assert_refused_or_valid(lambda: load_checkpoint(path), _valid_checkpoint, path.parent, path)


# ----------------------------------------------------------------------------- mask stores

STORE_FILES = (META_FILE, "masks.npy", "outputs.npy", "done.npy", COMPLETE_FILE)


def _store_corruptions(name: str, raw: bytes) -> st.SearchStrategy:
    structured = json_rewrites(raw) if name in (META_FILE, COMPLETE_FILE) else npy_rewrites(raw)
    return byte_corruptions(raw) | structured


def _valid_meta(meta):
    assert isinstance(meta, dict) and normalize_meta(meta) == meta


def _valid_store(store):
    assert store.meta == read_meta(store.path)
    m, c, n = store.n_rows, store.n_components, store.n_examples
    assert (store.masks.shape, store.outputs.shape, store.done.shape) == ((m, c), (m, n), (m,))
    store.close()


@fuzz(500)
@given(data=st.data())
def test_shard_store_file(originals, data):
    """Every reader of a complete shard with one corrupted file: read_meta, open, reopen to resume, and
    load_shards (checksums verified). Each refuses naming the shard and the corrupted file, or returns a
    consistent store, or (load_shards) exactly the data written."""
    original = originals["shards"][0]
    meta, written = read_meta(original), originals["shard_data"]
    name = data.draw(st.sampled_from(STORE_FILES), label="file")
    corruption = data.draw(_store_corruptions(name, (original / name).read_bytes()), label="corruption")

    def valid_data(result):
        for got, want in zip(result, written):
            np.testing.assert_array_equal(got, want)

    with corrupted_copy(original, corruption, name) as path:
        shard = path.parent
        for load, valid in ((lambda: read_meta(shard), _valid_meta),
                            (lambda: ShardStore.open(shard, readonly=True), _valid_store),
                            (lambda: ShardStore.create_or_open(shard, meta), _valid_store),
                            (lambda: _loaded([shard]), valid_data)):
            assert_refused_or_valid(load, valid, shard.parent, (shard, name))


# ----------------------------------------------------------------------------- JSON the workflow writes


@fuzz(200)
@given(data=st.data())
def test_receipt_file(originals, data):
    """A gathered split's receipt: refused naming it (also when its store list was corrupted into other paths,
    or its counts or alpha no longer match the stores), or the masks and outputs of the stores it lists."""
    original, root = originals["receipt"], originals["receipt"].parent
    raw = original.read_bytes()
    corruption = data.draw(byte_corruptions(raw) | json_rewrites(raw))

    def valid(result):
        for got, want in zip(result, originals["receipt_data"]):
            np.testing.assert_array_equal(got, want)

    with corrupted_copy(original, corruption) as path:
        assert_refused_or_valid(lambda: load_receipt(path, root), valid, path.parent, path)


@fuzz(150)
@given(data=st.data())
def test_demo_config_file(originals, data):
    """A demo run's config.json: refused naming it, or accepted only when it holds the same settings."""
    original = originals["demo"]
    raw = (original / "config.json").read_bytes()
    corruption = data.draw(byte_corruptions(raw) | json_rewrites(raw))

    def valid(_):
        saved = json.loads((out / "config.json").read_text())
        assert {k: v for k, v in saved.items() if k != "root"} == {
            k: v for k, v in asdict(DemoConfig()).items() if k != "root"}

    with corrupted_copy(original, corruption, "config.json") as path:
        out = path.parent
        assert_refused_or_valid(lambda: check_resumable(out, DemoConfig()), valid, out, path)


@fuzz(150)
@given(data=st.data())
def test_hash_record(originals, data):
    """A downloaded file and the SHA-256 recorded beside it, either one corrupted: refused naming it, or the
    file, unchanged, whose hash the record holds."""
    original = originals["recorded"]
    name = data.draw(st.sampled_from(["data.bin", "data.bin.sha256"]), label="file")
    corruption = data.draw(byte_corruptions((original / name).read_bytes()), label="corruption")

    def valid(checked):
        assert checked.read_bytes() == (original / "data.bin").read_bytes()

    with corrupted_copy(original, corruption, name) as path:
        assert_refused_or_valid(lambda: check_recorded(path.parent / "data.bin"), valid, path.parent, path)


@fuzz(100)
@given(data=st.data())
def test_component_count_cache(data):
    """The component-count cache is only a cache: a corrupted one is recounted, never believed or fatal."""
    args = ("resnet_tiny", None, 10, 1, 28)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "counts.json"
        with mock.patch.object(counts, "_cache_file", return_value=cache), mock.patch.dict(counts._MEMORY, clear=True):
            true_count = counts.component_count(*args)
            counts._MEMORY.clear()
            raw = cache.read_bytes()
            data.draw(byte_corruptions(raw) | json_rewrites(raw)).apply(cache)
            assert counts.component_count(*args) == true_count
            assert _listing(Path(tmp)) == ["counts.json"]
