"""coar.engine's memory: on a GPU the rows per pass come from a measured probe and the free memory (simulated
here through the engine's memory seam on the CPU), a pass that runs out of memory is halved and run again
with outputs still equal to the reference weight zeroing, one row out of memory is a CoarError, and CPU plans
are what the rule gave before any measurement existed."""
import math
import re
import warnings

import numpy as np
import pytest
import torch
import torch.fx
from torch import nn

import coar.engine as engine_module
from coar.ablation import surgery_outputs
from coar.components import Rule, component_set
from coar.engine import (GPU_MAX_ROWS, PROBE_ROWS, SAFETY, Engine, Plan, equal_batch, plan, saved_weight_bytes)
from coar.errors import CoarError
from coar.outputs import margin
from coar.paper.models import build_model
from tests.helpers import assert_no_hooks, randomize_bn
from tests.test_engine import assert_bitwise_unchanged, snapshot

MiB, GiB = 2 ** 20, 2 ** 30


def _rows_at_most(x: torch.Tensor, limit: int) -> torch.Tensor:
    """What a device with room for `limit` rows does with a larger pass: torch's out-of-memory error."""
    if x.shape[0] > limit:
        raise torch.OutOfMemoryError(f"simulated: {x.shape[0]} rows a pass, room for {limit}")
    return x


torch.fx.wrap("_rows_at_most")  # a leaf of the trace: BatchNorm folding keeps the limit in the folded copy


class Limit(nn.Module):
    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def forward(self, x):
        return _rows_at_most(x, self.limit)


def convnet(limit: int, seed: int = 0) -> tuple[nn.Module, object]:
    torch.manual_seed(seed)
    model = nn.Sequential(Limit(limit), nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                          nn.Conv2d(6, 5, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 3 * 3, 7),
                          nn.ReLU(), nn.Linear(7, 4))
    model = randomize_bn(model, seed).eval()
    rules = [Rule(r"1|4", ("Conv2d",)), Rule(r"7", ("Linear",)), Rule(r"9", ("Linear",), site="input")]
    return model, component_set(model, rules)


def mlp(limit: int, seed: int = 0) -> tuple[nn.Module, object]:
    torch.manual_seed(seed)
    model = nn.Sequential(Limit(limit), nn.Flatten(), nn.Linear(2 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 12),
                          nn.ReLU(), nn.Linear(12, 4)).eval()
    return model, component_set(model, [Rule(r"2|4", ("Linear",)), Rule(r"6", ("Linear",), site="input")])


class SimulatedGPU:
    """The engine's memory seam (coar.engine._Memory) with a GPU's readings: `free` bytes free and a pass of
    r rows peaking at `fixed + per_row * r` bytes (r read off the model's input as the probe runs)."""

    def __init__(self, free: int, per_row: int, fixed: int = 0, room: int | None = None):
        self.device = torch.device("cpu")
        self._free, self.per_row, self.fixed, self.room = free, per_row, fixed, room
        self.probed: list[int] = []
        self.released = 0

    def free(self) -> int:
        return self._free

    def total(self) -> int:
        return 80 * GiB

    def peak_of(self, fn) -> int:
        seen = []
        handle = nn.modules.module.register_module_forward_pre_hook(
            lambda m, args: seen.append(args[0].shape[0]) if args and isinstance(args[0], torch.Tensor) else None)
        try:
            fn()
        finally:
            handle.remove()
        rows = seen[0]  # the root module is called first
        self.probed.append(rows)
        if self.room is not None and rows > self.room:
            raise torch.OutOfMemoryError(f"simulated probe: {rows} rows, room for {self.room}")
        return self.fixed + self.per_row * rows

    def release(self) -> None:
        self.released += 1

    def describe(self) -> str:
        return f"{self._free / GiB:.1f} GiB free of 80.0 GiB"


def data(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)


def expected_rows(free: int, per_row: float, reserve: int = 0) -> int:
    return min(GPU_MAX_ROWS, max(1, int(SAFETY * (free - reserve) // math.ceil(per_row))))


# ------------------------------------------------------------------------------------ (a) measured rows
@pytest.mark.parametrize("make", [convnet, mlp])
def test_measured_rows_fill_the_safe_share_of_free_memory_with_hooks(make):
    model, cset = make(10 ** 6)
    x, _ = data(300)
    mem = SimulatedGPU(free=1 * GiB, per_row=1 * MiB)
    p = plan(model, cset, x, mechanism="hooks", memory=mem)
    rows = expected_rows(GiB, MiB)
    assert rows == 819  # 0.8 x 1 GiB / 1 MiB
    assert mem.probed == [PROBE_ROWS]  # the 1-row warm-up pass is not the one measured
    assert (p.mechanism, p.batch_size, p.masks_per_pass) == ("hooks", 300, rows // 300)
    assert "819 rows a pass from measured memory: 80% of 1.0 GiB free / 1.0 MiB a row (peak of a 64-row probe)" \
        in p.describe()


def test_measured_rows_choose_the_mechanism_and_leave_room_for_the_saved_weights():
    model, cset = convnet(10 ** 6)
    mem = SimulatedGPU(free=1 * GiB, per_row=1 * MiB)
    reserve = saved_weight_bytes(model, cset)
    assert reserve == 4 * (6 * 2 * 9 + 5 * 6 * 9 + 7 * 45 + 4 * 7)
    rows = expected_rows(GiB, MiB, reserve)
    many = plan(model, cset, data(1000)[0], memory=mem)  # 1,000 > rows / 2: one mask fills a pass
    assert (many.mechanism, many.batch_size, many.masks_per_pass) == ("weights", equal_batch(1000, rows), 1)
    assert f"{rows} rows a pass from measured memory" in many.reason and "saved weights" in many.reason
    assert f"1000 examples fill a pass ({rows // 2 + 1} rows on cpu)" in many.reason
    few = plan(model, cset, data(100)[0], memory=mem)  # 100 examples: hooks, as many masks as fit
    assert (few.mechanism, few.batch_size, few.masks_per_pass) == ("hooks", 100, rows // 100)


def test_the_per_row_figure_counts_the_fixed_part_and_rows_are_capped_and_at_least_one():
    model, cset = mlp(10 ** 6)
    x, _ = data(4)
    mem = SimulatedGPU(free=2 * GiB, per_row=100_000, fixed=6_400_000)  # fixed / 64 rows adds 100,000 a row
    p = plan(model, cset, x, mechanism="hooks", memory=mem)
    assert p.rows_per_pass == (expected_rows(2 * GiB, 200_000) // 4) * 4
    big = plan(model, cset, x, mechanism="hooks", memory=SimulatedGPU(free=80 * GiB, per_row=1000))
    assert big.rows_per_pass == GPU_MAX_ROWS and f"capped at {GPU_MAX_ROWS:,}" in big.reason
    tiny = plan(model, cset, x, mechanism="hooks", memory=SimulatedGPU(free=MiB, per_row=GiB))
    assert (tiny.batch_size, tiny.masks_per_pass) == (1, 1) and "1 rows a pass from measured memory" in tiny.reason


def test_a_probe_out_of_memory_is_halved_and_given_choices_are_not_measured():
    model, cset = mlp(10 ** 6)
    x, _ = data(50)
    mem = SimulatedGPU(free=GiB, per_row=MiB, room=16)
    p = plan(model, cset, x, mechanism="hooks", memory=mem)
    assert mem.probed == [64, 32, 16] and mem.released == 2 and "peak of a 16-row probe" in p.reason
    assert p.rows_per_pass == (expected_rows(GiB, MiB) // 50) * 50
    untouched = SimulatedGPU(free=GiB, per_row=MiB)
    assert plan(model, cset, x, batch_size=10, memory=untouched).rows_per_pass == 250 and untouched.probed == []
    with pytest.raises(CoarError, match=r"Sequential runs out of memory on cpu on one example \(1.0 GiB free"):
        plan(model, cset, x, memory=SimulatedGPU(free=GiB, per_row=MiB, room=0))


def test_the_probe_runs_the_real_model_as_the_engine_runs_it():
    """Against a model that cannot take more than 8 rows, the probe itself is halved to 8 rows (the limit is
    in the model, not in the simulated readings) and the model is left without hooks."""
    model, cset = convnet(8)
    mem = SimulatedGPU(free=GiB, per_row=MiB)
    p = plan(model, cset, data(20)[0], memory=mem)
    assert mem.probed == [8] and mem.released == 3 and "8-row probe" in p.reason and p.folded == ("2",)
    assert_no_hooks(model)


# ------------------------------------------------------------------------------ (b) out of memory: halve
def _run(make, mechanism, n, limit, **kw):
    model, cset = make(limit)
    x, y = data(n, seed=n)
    keep = np.random.default_rng(n).random((7, cset.size)) > 0.4
    ref = surgery_outputs(model, cset, x, y, keep, margin, "scale", 0.3, batch_size=limit)  # ablate_weights
    before = snapshot(model)
    mem = kw.pop("memory", None) or SimulatedGPU(free=GiB, per_row=MiB)
    engine = Engine(model, cset, x, y, margin, "scale", 0.3, mechanism=mechanism, memory=mem, **kw)
    planned = engine.plan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = engine(keep)
    return model, before, engine, planned, out, ref, keep, [w for w in caught if "out of memory" in str(w.message)]


@pytest.mark.parametrize("make", [convnet, mlp])
@pytest.mark.parametrize("mechanism,n,limit,final", [
    ("weights", 40, 12, (10, 1)),   # 40 examples a pass -> 20 -> 10
    ("hooks", 6, 12, (6, 2)),       # 819 // 6 = 136 masks of 6 -> 68 -> 34 -> 17 -> 8 -> 4 -> 2
])
def test_out_of_memory_halves_the_pass_and_the_outputs_equal_weight_zeroing(make, mechanism, n, limit, final):
    model, before, engine, planned, out, ref, keep, warned = _run(make, mechanism, n, limit)
    assert planned.rows_per_pass > limit and planned.mechanism == mechanism
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    assert np.abs(out - out[:1]).max() > 1e-3  # the masks differ, so a mask's row in the wrong place would show
    assert_bitwise_unchanged(model, before)
    assert_no_hooks(model)
    assert (engine.plan.batch_size, engine.plan.masks_per_pass) == final and engine.plan.mechanism == mechanism
    assert f"out of memory at {planned.rows_per_pass:,} rows a pass, halved to {engine.plan.rows_per_pass}" \
        in engine.plan.describe()
    assert len(warned) == 1 and engine.plan.describe() in str(warned[0].message)
    assert engine.memory.released >= 1
    with warnings.catch_warnings():  # the smaller plan is kept: no further out-of-memory, same outputs
        warnings.simplefilter("error")
        assert np.array_equal(engine(keep), out)


def test_hooks_halve_the_batch_once_one_mask_a_pass_does_not_fit():
    model, before, engine, planned, out, ref, keep, warned = _run(mlp, "hooks", 40, 12, batch_size=40,
                                                                  masks_per_pass=1)
    assert planned.rows_per_pass == 40
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    assert (engine.plan.batch_size, engine.plan.masks_per_pass) == (10, 1) and len(warned) == 1


def test_weights_mechanism_bitwise_equals_weight_zeroing_after_halving():
    """Without BatchNorm folding or a format copy, the weights mechanism's products are the reference's."""
    model, before, engine, planned, out, ref, keep, warned = _run(mlp, "weights", 24, 12, batchnorm="keep")
    assert engine.model is model and engine.plan.batch_size == 12
    assert np.array_equal(out, ref)
    assert_bitwise_unchanged(model, before)


# ---------------------------------------------------------------------------- (c) one row out of memory
@pytest.mark.parametrize("mechanism", ["weights", "hooks"])
def test_out_of_memory_at_one_row_is_a_coar_error_and_the_weights_are_restored(mechanism):
    model, cset = convnet(0)
    x, y = data(4)
    with torch.no_grad():  # negative weights: a product that zeroed them would leave -0.0 behind
        model[1].weight[0] = -model[1].weight[0].abs()
    before = snapshot(model)
    mem = SimulatedGPU(free=3 * GiB, per_row=MiB)
    engine = Engine(model, cset, x, y, margin, mechanism=mechanism, batch_size=4, masks_per_pass=1, memory=mem,
                    batchnorm="keep")
    assert engine.model is model  # the weights mechanism masks the caller's weights in place
    keep = np.random.default_rng(0).random((3, cset.size)) > 0.5
    with pytest.warns(RuntimeWarning, match="out of memory at 4 rows"), pytest.raises(CoarError) as err:
        engine(keep)
    message = str(err.value)
    assert "Sequential runs out of memory on cpu on one example a pass (3.0 GiB free of 80.0 GiB)" in message
    assert "simulated: 1 rows a pass, room for 0" in message
    assert isinstance(err.value.__cause__, torch.OutOfMemoryError)
    assert engine.plan.rows_per_pass == 1 and mem.released == 2
    assert_bitwise_unchanged(model, before)
    assert_no_hooks(model)


def test_other_errors_are_not_taken_for_out_of_memory():
    model, cset = mlp(10 ** 6)
    x, y = data(8)
    calls = []

    def output_fn(logits, targets):
        calls.append(1)
        raise RuntimeError("not memory")

    engine = Engine(model, cset, x, y, output_fn, mechanism="weights", memory=SimulatedGPU(free=GiB, per_row=MiB))
    with pytest.raises(RuntimeError, match="not memory"):
        engine(np.ones((2, cset.size), bool))
    assert len(calls) == 1 and engine.plan == engine._planned


# ------------------------------------------------------------------------------- (d) CPU plans unchanged
RESNET_FOLDED = ("bn1", "layers.0.0.bn1", "layers.0.0.bn2", "layers.0.0.shortcut.1", "layers.1.0.bn1",
                 "layers.1.0.bn2", "layers.1.0.shortcut.1")


def _cpu(mechanism, batch, per_pass, share, n, fits, fmt="contiguous", folded=()):
    fill = f"{n} examples fill a pass (64 rows on cpu)" if fits else f"{n} examples fill less than a pass (64 rows on cpu)"
    return Plan(mechanism, fmt, batch, per_pass, (f"convolutions are {share}% of the FLOPs; " if share is not None
                                                   else "") + fill, folded)


@pytest.mark.parametrize("name,n,expected", [
    ("resnet_tiny", 200, _cpu("weights", 200, 1, 100, 200, True, "channels_last", RESNET_FOLDED)),
    ("resnet_tiny", 600, _cpu("weights", 200, 1, 100, 600, True, "channels_last", RESNET_FOLDED)),
    ("resnet_tiny", 63, _cpu("hooks", 63, 4, 100, 63, False, "channels_last", RESNET_FOLDED)),
    ("resnet_tiny", 1, _cpu("hooks", 1, 256, 100, 1, False, "channels_last", RESNET_FOLDED)),
    ("vit_tiny", 64, _cpu("weights", 64, 1, 8, 64, True)),
    ("mlp_small", 50, Plan("shared", "contiguous", 50, 5, "convolutions are 0% of the FLOPs; fc1 carries 99% of the "
                           "FLOPs (784 MACs an output) and runs once for every mask; 50 examples fill less than a "
                           "pass (64 rows on cpu)", ())),
    ("gpt2_tiny", 8, _cpu("hooks", 8, 32, None, 8, False)),
])
def test_cpu_plans_are_the_rules_and_measure_nothing(monkeypatch, name, n, expected):
    """The whole Plan, reason included, as the rule gave it before measured rows existed; no memory read."""
    def refuse(*args, **kwargs):
        raise AssertionError("a CPU plan read memory")

    monkeypatch.setattr(engine_module, "_Memory", refuse)
    monkeypatch.setattr(engine_module, "measured_rows", refuse)
    if name == "gpt2_tiny":
        model = build_model(name).eval()
        x = torch.zeros(n, 16, dtype=torch.long)
    else:
        model = build_model(name, in_channels=1, image_size=28).eval()
        x = torch.zeros(n, 1, 28, 28)
    assert plan(model, component_set(model, name), x) == expected


def test_a_cpu_engine_is_not_measured_and_runs_as_planned(monkeypatch):
    monkeypatch.setattr(engine_module, "measured_rows", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    model, cset = convnet(10 ** 6)
    x, y = data(70)
    engine = Engine(model, cset, x, y, margin)
    assert (engine.plan.mechanism, engine.plan.batch_size, engine.plan.rows_per_pass) == ("weights", 70, 70)
    assert isinstance(engine.memory, engine_module._Memory) and engine.memory.device.type == "cpu"


def test_the_cpu_memory_readings_refuse_a_peak_and_free_nothing():
    mem = engine_module._Memory("cpu")
    assert 0 < mem.free() <= mem.total() and "free of" in mem.describe()
    mem.release()  # nothing to hand back on a CPU
    with pytest.raises(CoarError, match="CUDA device only, not on cpu"):
        mem.peak_of(lambda: None)


# --------------------------------------------------------------------------------------- on a real GPU
@pytest.fixture
def exact_fp32():
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.cuda
@pytest.mark.parametrize("n", [8, 400])
def test_on_a_gpu_rows_are_measured_and_outputs_equal_weight_zeroing(exact_fp32, n):
    torch.manual_seed(0)
    model = randomize_bn(build_model("resnet_tiny", in_channels=1, image_size=28), 0).eval().cuda()
    cset = component_set(model, "resnet_tiny")
    x, y = torch.randn(n, 1, 28, 28, device="cuda"), torch.randint(0, 10, (n,), device="cuda")
    engine = Engine(model, cset, x, y, margin)
    p = engine.plan
    measured = re.search(r"([\d,]+) rows a pass from measured memory: 80% of .* free .* a row \(peak of a "
                         r"(\d+)-row probe\)", p.reason)
    assert measured, p.reason
    rows = int(measured.group(1).replace(",", ""))
    assert 1 <= rows <= GPU_MAX_ROWS and int(measured.group(2)) <= PROBE_ROWS
    # the mechanism rule on the measured rows: one mask a pass when the examples are more than half of them
    if n > rows // 2:
        assert (p.mechanism, p.batch_size, p.masks_per_pass) == ("weights", equal_batch(n, rows), 1)
    else:
        assert (p.mechanism, p.batch_size, p.masks_per_pass) == ("hooks", n, rows // n)
    keep = np.random.default_rng(0).random((p.masks_per_pass + 1, cset.size)) > 0.3  # a full pass and one more
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the measured passes fit: no out-of-memory halving
        out = engine(keep)
    assert engine.plan == p
    np.testing.assert_allclose(out, surgery_outputs(model, cset, x, y, keep, margin), rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
def test_on_a_gpu_a_pass_out_of_memory_is_halved(exact_fp32):
    """A per-process memory cap makes a 65,536-row pass of a wide MLP (256 MiB an activation) run out of
    memory for real; the engine halves it until it fits and gives the reference outputs."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
    model = model.eval().cuda()
    cset = component_set(model, [Rule(r"0|2", ("Linear",))])
    n = 65_536
    x, y = torch.randn(n, 64, device="cuda"), torch.randint(0, 10, (n,), device="cuda")
    keep = np.random.default_rng(0).random((3, cset.size)) > 0.3
    ref = surgery_outputs(model, cset, x, y, keep, margin, batch_size=4096)
    torch.cuda.empty_cache()
    total = torch.cuda.mem_get_info()[1]
    cap = torch.cuda.memory_allocated() + 384 * MiB  # room for about a quarter of the first pass
    torch.cuda.set_per_process_memory_fraction(cap / total)
    try:
        engine = Engine(model, cset, x, y, margin, mechanism="weights", batch_size=n)
        with pytest.warns(RuntimeWarning, match="out of memory at 65,536 rows"):
            out = engine(keep)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert engine.plan.batch_size < n
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ a resumed shard keeps the plan it started with
def test_a_resumed_shard_runs_with_the_plan_it_started_with(tmp_path, monkeypatch):
    """A GPU's measured rows per pass depend on the memory free at the time, so a shard records its plan when it
    starts (engine.json) and a resume with every choice left to the engine reuses it: its rows come out bitwise as an
    uninterrupted run's. A record of another device type, or an unreadable one, is ignored (the engine plans)."""
    import json

    from coar import pipeline
    from coar.examples import Examples
    from coar.paper.models import build_model

    from tests.helpers import randomize_bn

    torch.manual_seed(0)
    model = randomize_bn(build_model("resnet_tiny", in_channels=1, image_size=28)).eval()
    cset = component_set(model, "resnet_tiny")
    g = np.random.default_rng(0)
    ex = Examples(g.integers(0, 256, (24, 1, 28, 28), dtype=np.uint8), g.integers(0, 10, 24).astype(np.int64))
    started = dict(mechanism="hooks", masks_per_pass=3, batch_size=24, memory_format="contiguous", batchnorm="keep")

    def sample(path, logs, **choices):
        return pipeline.sample_store(path, model, cset, ex, m=40, alpha=0.1, seed=3, shard=0, dtype="float32",
                                     progress=False, log=logs.append, **choices)

    whole = sample(tmp_path / "whole", [], **started)
    assert json.loads((tmp_path / "whole" / pipeline.PLAN_FILE).read_text()) == {"device_type": "cpu", **started}

    real = pipeline.run_shard
    monkeypatch.setattr(pipeline, "run_shard",  # started, then interrupted after the first aligned block
                        lambda store, engine, masks_per_call, progress: store.write(
                            np.arange(masks_per_call), engine(np.array(store.masks[:masks_per_call]))))
    sample(tmp_path / "resumed", [], **started).close()
    monkeypatch.setattr(pipeline, "run_shard", real)
    logs = []
    resumed = sample(tmp_path / "resumed", logs)  # every choice the engine's
    assert "hooks (3 masks x 24 examples a pass)" in logs[0] and "recorded when the shard started" in logs[0]
    assert resumed.is_complete and np.array_equal(np.asarray(resumed.outputs), np.asarray(whole.outputs))

    fresh_logs = []
    sample(tmp_path / "auto", fresh_logs)
    auto = json.loads((tmp_path / "auto" / pipeline.PLAN_FILE).read_text())
    assert auto["masks_per_pass"] != 3 and "recorded" not in fresh_logs[0]  # the engine's own plan differs
    for record in ('{"device_type": "cuda", "mechanism": "hooks"}', "{not json"):
        assert pipeline.recorded_plan(tmp_path / "x", "cpu") is None  # no record
        (tmp_path / "x").mkdir(exist_ok=True)
        (tmp_path / "x" / pipeline.PLAN_FILE).write_text(record)
        assert pipeline.recorded_plan(tmp_path / "x", "cpu") is None
