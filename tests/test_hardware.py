"""Hardware detection without a GPU: NVML paths through a fake pynvml module, replay of
recordings, CUDA_VISIBLE_DEVICES mapping, the sampler, and the --gpu NAME table."""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path

import pytest

from ftwiz.core.errors import UserError
from ftwiz.core.hardware import (
    GPU,
    GpuSample,
    GpuSampler,
    Hardware,
    NvmlBackend,
    RecordedBackend,
    detect_hardware,
    known_gpu,
    visible_order,
)

FIXTURES = Path(__file__).parent / "fixtures" / "gpus"
GIB = 2**30


@pytest.fixture(autouse=True)
def no_visible_devices_from_the_test_machine(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


class NVMLError(Exception):
    def __init__(self, value: int = 3):
        self.value = value

    def __str__(self) -> str:
        return {3: "Not Supported", 9: "Driver Not Loaded", 12: "NVML Shared Library Not Found"}.get(self.value, "err")


def make_fake_nvml(gpus=None, fail=(), init_error=None, calls=None):
    """A stand-in for pynvml: `gpus` is a list of dicts; any function named in `fail` raises
    NVMLError(NOT_SUPPORTED); `init_error` makes nvmlInit raise; `calls` counts every call."""
    gpus = gpus if gpus is not None else []
    calls = calls if calls is not None else {}
    nvml = types.SimpleNamespace(NVMLError=NVMLError, NVML_TEMPERATURE_GPU=0, shutdowns=0)

    def fn(name, impl):
        def wrapper(*args):
            calls[name] = calls.get(name, 0) + 1
            if name in fail:
                raise NVMLError(3)
            return impl(*args)

        setattr(nvml, name, wrapper)

    def init():
        if init_error is not None:
            raise init_error

    def shutdown():
        nvml.shutdowns += 1

    g = lambda h: gpus[h]  # noqa: E731 - the handle is the index
    fn("nvmlInit", init)
    fn("nvmlShutdown", shutdown)
    fn("nvmlDeviceGetCount", lambda: len(gpus))
    fn("nvmlDeviceGetHandleByIndex", lambda i: i)
    fn("nvmlSystemGetDriverVersion", lambda: "580.159.04")
    fn("nvmlSystemGetCudaDriverVersion_v2", lambda: 13000)
    fn("nvmlDeviceGetName", lambda h: g(h)["name"])
    fn("nvmlDeviceGetUUID", lambda h: g(h)["uuid"])
    fn("nvmlDeviceGetMemoryInfo", lambda h: types.SimpleNamespace(
        total=g(h)["total"], used=g(h)["used"], free=g(h)["total"] - g(h)["used"]))
    fn("nvmlDeviceGetCudaComputeCapability", lambda h: g(h)["cc"])
    fn("nvmlDeviceGetUtilizationRates", lambda h: types.SimpleNamespace(gpu=g(h).get("util", 0), memory=0))
    fn("nvmlDeviceGetTemperature", lambda h, sensor: 41)
    fn("nvmlDeviceGetPowerUsage", lambda h: 123_456)
    fn("nvmlDeviceGetEnforcedPowerLimit", lambda h: 700_000)
    fn("nvmlDeviceGetComputeRunningProcesses", lambda h: [types.SimpleNamespace(**p) for p in g(h).get("procs", [])])
    fn("nvmlDeviceGetMigMode", lambda h: [g(h).get("mig", 0), 0])
    fn("nvmlSystemGetProcessName", lambda pid: "python3")
    return nvml


H200 = {"name": "NVIDIA H200", "uuid": "GPU-aaaa-1111", "total": 143771 * 2**20, "used": 512 * 2**20, "cc": (9, 0)}
A10G = {"name": "NVIDIA A10G", "uuid": "GPU-bbbb-2222", "total": 23028 * 2**20, "used": 0, "cc": (8, 6)}
T4 = {"name": "Tesla T4", "uuid": "GPU-cccc-3333", "total": 15360 * 2**20, "used": 0, "cc": (7, 5)}


def test_nvml_reports_every_field():
    nvml = make_fake_nvml([dict(H200, util=37, procs=[{"pid": 4242, "usedGpuMemory": 3 * GIB}])])
    hw = detect_hardware(NvmlBackend(nvml=nvml, visible_devices=None))
    assert hw.nvml_state == "ok" and not hw.cpu_only
    gpu = hw.gpus[0]
    assert (gpu.index, gpu.name, gpu.uuid) == (0, "NVIDIA H200", "GPU-aaaa-1111")
    assert gpu.memory_total_bytes == 143771 * 2**20 and gpu.memory_used_bytes == 512 * 2**20
    assert gpu.memory_free_bytes == gpu.memory_total_bytes - gpu.memory_used_bytes
    assert (gpu.driver_version, gpu.cuda_version) == ("580.159.04", "13.0")
    assert gpu.compute_capability == (9, 0) and gpu.bf16 is True
    assert (gpu.utilization_pct, gpu.temperature_c, gpu.power_w, gpu.power_limit_w) == (37, 41, 123.456, 700.0)
    assert gpu.processes == [{"pid": 4242, "name": "python3", "used_bytes": 3 * GIB}]
    assert gpu.mig_mode is False
    assert nvml.shutdowns == 1  # detect_hardware leaves NVML as it found it


def test_failing_calls_give_defaults_not_exceptions():
    fail = {"nvmlDeviceGetUtilizationRates", "nvmlDeviceGetTemperature", "nvmlDeviceGetPowerUsage",
            "nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetMigMode",
            "nvmlDeviceGetCudaComputeCapability", "nvmlSystemGetDriverVersion", "nvmlSystemGetCudaDriverVersion_v2"}
    nvml = make_fake_nvml([H200], fail=fail)
    assert not hasattr(nvml, "nvmlSystemGetCudaDriverVersion")  # a function the binding lacks: also a default
    gpu = detect_hardware(NvmlBackend(nvml=nvml, visible_devices=None)).gpus[0]
    assert gpu.name == "NVIDIA H200" and gpu.memory_total_bytes == H200["total"]
    assert gpu.utilization_pct is None and gpu.temperature_c is None and gpu.power_w is None
    assert gpu.power_limit_w is None and gpu.processes == [] and gpu.mig_mode is None
    assert gpu.compute_capability is None and gpu.bf16 is False
    assert gpu.driver_version is None and gpu.cuda_version is None


def test_mig_reports_mode_and_na_process_memory():
    procs = [{"pid": 999_999_999, "usedGpuMemory": None}]  # MIG: N/A; a PID from another namespace
    nvml = make_fake_nvml([dict(H200, mig=1, procs=procs)], fail={"nvmlSystemGetProcessName"})
    hw = detect_hardware(NvmlBackend(nvml=nvml, visible_devices=None))
    assert hw.gpus[0].mig_mode is True
    assert hw.gpus[0].processes == [{"pid": 999_999_999, "name": None, "used_bytes": None}]
    assert "MIG" in hw.message


def test_no_gpu_is_a_state():
    hw = detect_hardware(NvmlBackend(nvml=make_fake_nvml([]), visible_devices=None))
    assert hw.nvml_state == "no-gpu" and hw.cpu_only and hw.gpus == []
    assert "CPU only" in hw.message


def test_no_driver_is_a_state():
    nvml = make_fake_nvml([H200], init_error=NVMLError(9))
    hw = detect_hardware(NvmlBackend(nvml=nvml))
    assert hw.nvml_state == "no-driver" and hw.cpu_only
    assert "Driver Not Loaded" in hw.message
    assert nvml.shutdowns == 0


def test_no_library_is_a_state(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    hw = detect_hardware(NvmlBackend())
    assert hw.nvml_state == "no-library" and hw.cpu_only
    assert "nvidia-ml-py" in hw.message


def test_host_facts_come_from_psutil(tmp_path):
    hw = detect_hardware(NvmlBackend(nvml=make_fake_nvml([])), path=tmp_path / "not" / "yet")
    assert hw.cpu_count >= 1 and hw.cpu_name
    assert hw.ram_total_bytes >= hw.ram_available_bytes > 0
    assert hw.disk_free_bytes > 0  # measured on the nearest existing parent


def test_a_real_bug_is_not_swallowed():
    nvml = make_fake_nvml([H200])

    def broken(handle):
        raise ZeroDivisionError

    nvml.nvmlDeviceGetName = broken
    with pytest.raises(ZeroDivisionError):
        detect_hardware(NvmlBackend(nvml=nvml, visible_devices=None))


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        (None, ["GPU-aaaa-1111", "GPU-bbbb-2222", "GPU-cccc-3333"]),
        ("2,0", ["GPU-cccc-3333", "GPU-aaaa-1111"]),
        ("GPU-bbbb", ["GPU-bbbb-2222"]),  # a unique UUID prefix, as CUDA accepts
        ("cccc-3333,1", ["GPU-cccc-3333", "GPU-bbbb-2222"]),
        ("1,7,0", ["GPU-bbbb-2222"]),  # CUDA stops at the first invalid entry
        ("", []),
        ("-1", []),
    ],
)
def test_cuda_visible_devices_maps_to_training_indices(visible, expected):
    hw = detect_hardware(NvmlBackend(nvml=make_fake_nvml([H200, A10G, T4]), visible_devices=visible))
    assert [g.uuid for g in hw.gpus] == expected
    assert [g.index for g in hw.gpus] == list(range(len(expected)))
    if visible is not None and len(expected) < 3:
        assert "CUDA_VISIBLE_DEVICES" in hw.message
    if not expected:
        assert hw.cpu_only and hw.nvml_state == "ok"


def test_cuda_visible_devices_from_environment(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    hw = detect_hardware(NvmlBackend(nvml=make_fake_nvml([H200, A10G])))
    assert [(g.index, g.nvml_index, g.name) for g in hw.gpus] == [(0, 1, "NVIDIA A10G")]
    assert hw.cuda_visible_devices == "1"


def test_mig_uuids_in_cuda_visible_devices_keep_the_gpu_list():
    assert visible_order("MIG-1234", [{"nvml_index": 0, "uuid": "GPU-a"}]) is None


def test_to_dict_round_trips_through_recorded_backend(tmp_path):
    nvml = make_fake_nvml([H200, dict(A10G, procs=[{"pid": 1, "usedGpuMemory": GIB}])])
    original = detect_hardware(NvmlBackend(nvml=nvml, visible_devices=None))
    path = tmp_path / "rec.json"
    path.write_text(json.dumps(original.to_dict()))
    replayed = detect_hardware(RecordedBackend(path))
    assert replayed.to_dict() == {**original.to_dict(), "disk_path": "."}
    assert replayed.gpus[0].compute_capability == (9, 0)


def test_recorded_backend_applies_visible_devices():
    data = detect_hardware(NvmlBackend(nvml=make_fake_nvml([H200, A10G]), visible_devices=None)).to_dict()
    hw = detect_hardware(RecordedBackend(data, visible_devices="1"))
    assert [(g.index, g.name) for g in hw.gpus] == [(0, "NVIDIA A10G")]


def test_recorded_cpu_only_replays_cpu_only():
    data = detect_hardware(NvmlBackend(nvml=make_fake_nvml([], init_error=NVMLError(12)))).to_dict()
    hw = detect_hardware(RecordedBackend(data))
    assert hw.cpu_only and hw.nvml_state == "no-driver" and "Library Not Found" in hw.message


def test_recording_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        RecordedBackend(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"gpus": [\n oops')
    with pytest.raises(UserError, match=r"bad.json:2: not valid JSON"):
        RecordedBackend(bad)


def recordings():
    return sorted(FIXTURES.glob("*.json"))


@pytest.mark.parametrize("path", recordings(), ids=lambda p: p.name)
def test_fixtures_replay(path):
    data = json.loads(path.read_text())
    hw = detect_hardware(RecordedBackend(path))
    assert isinstance(hw, Hardware) and len(hw.gpus) == len(data["gpus"])
    for gpu in hw.gpus:
        assert gpu.memory_total_bytes > 0 and gpu.compute_capability and gpu.bf16 == (gpu.compute_capability >= (8, 0))
        assert gpu.memory_free_bytes <= gpu.memory_total_bytes


def test_h200_recording_when_present():
    path = FIXTURES / "h200.json"
    if not path.exists():
        pytest.skip("h200.json is recorded on the GPU machine (see tests/fixtures/gpus/README.md)")
    gpu = detect_hardware(RecordedBackend(path)).gpus[0]
    assert gpu.name == "NVIDIA H200" and gpu.compute_capability == (9, 0) and gpu.bf16
    assert 139 < gpu.memory_total_bytes / GIB < 141


def test_sampler_reuses_handles_and_is_cheap():
    calls: dict[str, int] = {}
    nvml = make_fake_nvml([H200, A10G], calls=calls)
    clock = iter(range(100, 200)).__next__
    with GpuSampler(NvmlBackend(nvml=nvml, visible_devices="1"), clock=clock) as sampler:
        first = sampler.sample()
        started = time.perf_counter()
        for _ in range(20):
            sampler.sample()
        per_sample = (time.perf_counter() - started) / 20
    assert first == [GpuSample(index=0, t=100, memory_used_bytes=0, memory_total_bytes=A10G["total"],
                               utilization_pct=0, temperature_c=41, power_w=123.456)]
    assert calls["nvmlInit"] == 1 and calls["nvmlDeviceGetHandleByIndex"] == 2  # no re-init, no new handles
    assert calls["nvmlDeviceGetMemoryInfo"] == 21  # only the visible GPU is read
    assert nvml.shutdowns == 1
    assert per_sample < 0.05  # generous sanity bound; the H200 measured well under a millisecond


def test_sampler_replays_recording_and_is_empty_without_gpu():
    data = detect_hardware(NvmlBackend(nvml=make_fake_nvml([H200]), visible_devices=None)).to_dict()
    sampler = GpuSampler(RecordedBackend(data), clock=lambda: 5.0)
    samples = sampler.sample()
    assert [(s.index, s.t, s.memory_used_bytes) for s in samples] == [(0, 5.0, 512 * 2**20)]
    started = time.perf_counter()
    for _ in range(20):
        sampler.sample()
    assert (time.perf_counter() - started) / 20 < 0.05  # generous sanity bound
    nothing = GpuSampler(NvmlBackend(nvml=make_fake_nvml([], init_error=NVMLError(9))))
    assert nothing.sample() == [] and nothing.state == "no-driver"


@pytest.mark.parametrize(
    ("name", "canonical", "gib", "bf16"),
    [("h200", "H200", 140.4, True), ("NVIDIA A100-SXM4-80GB", "A100 80GB", 80.0, True),
     ("a100 40gb", "A100 40GB", 40.0, True), ("NVIDIA GeForce RTX 4090", "RTX 4090", 24.0, True),
     ("3090", "RTX 3090", 24.0, True), ("L4", "L4", 22.5, True), ("A10", "A10", 22.5, True),
     ("NVIDIA H100 80GB HBM3", "H100 80GB SXM", 79.6, True), ("Tesla T4", "T4", 15.0, False)],
)
def test_known_gpu(name, canonical, gib, bf16):
    gpu = known_gpu(name)
    assert isinstance(gpu, GPU) and gpu.name == canonical and gpu.bf16 is bf16
    assert gpu.memory_total_bytes / GIB == pytest.approx(gib, abs=0.1)
    assert gpu.memory_free_bytes == gpu.memory_total_bytes


@pytest.mark.parametrize("name", ["x100", "A10G", "a100", "l40s"])
def test_unknown_gpu_is_a_user_error(name):
    with pytest.raises(UserError, match="allowed: RTX 3070, RTX 3080, RTX 3090"):
        known_gpu(name)
