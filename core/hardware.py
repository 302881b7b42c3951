"""What this machine has: GPUs through NVML, CPU, RAM and disk through psutil.

This is the one module that touches pynvml (from nvidia-ml-py), imported lazily. Every NVML call
goes through `NvmlBackend._query`, which returns a default instead of raising: drivers lie, MIG
answers N/A, containers hide PIDs. "No library", "no driver" and "no GPU" are states with a
human message (`Hardware.nvml_state`, `Hardware.message`), never exceptions.

A backend is the small interface both NVML and a JSON recording implement (open, close, state,
system, device_count, identity, device_info, device_sample, host, visible_devices), addressed by
position 0..device_count()-1 in NVML order, so tests and CI replay
what a real GPU said (`ftwiz gpus --json` output is the recording format).
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from ftwiz.core.errors import UserError

NVML_STATES = ("ok", "no-library", "no-driver", "no-gpu")
_STATE_MESSAGES = {
    "no-library": "CPU only: the NVML Python binding is missing (pip install nvidia-ml-py).",
    "no-driver": "CPU only: no NVIDIA driver answered ({detail}).",
    "no-gpu": "CPU only: the NVIDIA driver is loaded but reports no GPU.",
}


@dataclass
class GPU:
    """One GPU as the training process will see it: `index` is its CUDA index after
    CUDA_VISIBLE_DEVICES (with CUDA_DEVICE_ORDER=PCI_BUS_ID), `nvml_index` its physical one.
    Fields NVML could not answer are None."""

    index: int
    name: str
    uuid: str
    memory_total_bytes: int
    memory_used_bytes: int | None = None
    memory_free_bytes: int | None = None
    driver_version: str | None = None
    cuda_version: str | None = None
    compute_capability: tuple[int, int] | None = None
    bf16: bool = False
    utilization_pct: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    processes: list[dict] = field(default_factory=list)  # {pid, name, used_bytes (None: N/A)}
    mig_mode: bool | None = None  # None: the GPU does not support MIG or did not say
    nvml_index: int | None = None

    @property
    def memory_total_gib(self) -> float:
        return self.memory_total_bytes / 2**30

    @property
    def memory_free_gib(self) -> float | None:
        return None if self.memory_free_bytes is None else self.memory_free_bytes / 2**30

    def to_dict(self) -> dict:
        data = asdict(self)
        data["compute_capability"] = list(self.compute_capability) if self.compute_capability else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> GPU:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        cc = values.get("compute_capability")
        values["compute_capability"] = tuple(cc) if cc else None
        values.setdefault("bf16", bool(cc) and tuple(cc) >= (8, 0))
        values.setdefault("nvml_index", values.get("index"))
        return cls(**values)


@dataclass
class Hardware:
    gpus: list[GPU]
    cpu_count: int | None
    cpu_name: str
    ram_total_bytes: int | None
    ram_available_bytes: int | None
    disk_free_bytes: int | None
    nvml_state: str
    message: str
    disk_path: str = "."
    driver_version: str | None = None
    cuda_version: str | None = None
    cuda_visible_devices: str | None = None

    @property
    def cpu_only(self) -> bool:
        return not self.gpus

    def to_dict(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k != "gpus"}
        data["cpu_only"] = self.cpu_only
        data["gpus"] = [gpu.to_dict() for gpu in self.gpus]
        return data


@dataclass
class GpuSample:
    index: int
    t: float
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    utilization_pct: float | None
    temperature_c: float | None
    power_w: float | None


class Backend(Protocol):
    """What detect_hardware and GpuSampler need; NvmlBackend and RecordedBackend provide it."""

    state: str
    message: str

    def open(self) -> None: ...
    def close(self) -> None: ...
    def system(self) -> dict: ...  # {"driver_version", "cuda_version"}
    def device_count(self) -> int: ...
    def identity(self, position: int) -> dict: ...  # {"nvml_index", "uuid"}: for CUDA_VISIBLE_DEVICES
    def device_info(self, position: int) -> dict: ...  # GPU fields except index
    def device_sample(self, position: int) -> dict: ...  # GpuSample fields except index, t
    def host(self) -> dict | None: ...  # recorded CPU/RAM/disk, None to ask psutil
    def visible_devices(self) -> str | None: ...  # CUDA_VISIBLE_DEVICES to apply


class NvmlBackend:
    """NVML through pynvml. `nvml` injects a module (a fake in tests); by default `import pynvml`
    on open(). Handles are looked up once and reused, so a sample costs only the reads."""

    def __init__(self, nvml: Any = None, visible_devices: str | None = None):
        self._nvml = nvml
        self._visible = visible_devices
        self._handles: list[tuple[int, Any]] = []  # (nvml_index, handle), in NVML order
        self._opened = False
        self.state = "no-library"
        self.message = _STATE_MESSAGES["no-library"]

    def open(self) -> None:
        if self._opened:
            return
        if self._nvml is None:
            try:
                import pynvml
            except ImportError:
                self._set_state("no-library")
                return
            self._nvml = pynvml
        try:
            self._nvml.nvmlInit()
        except Exception as exc:  # NVMLError (no driver, lib not found) or OSError from ctypes
            self._set_state("no-driver", detail=str(exc) or type(exc).__name__)
            return
        self._opened = True
        count = self._query("nvmlDeviceGetCount", default=0)
        self._set_state("ok" if count else "no-gpu")
        for index in range(count):
            handle = self._query("nvmlDeviceGetHandleByIndex", index)
            if handle is not None:
                self._handles.append((index, handle))

    def close(self) -> None:
        if self._opened:
            self._query("nvmlShutdown")
            self._opened = False
            self._handles.clear()

    def _set_state(self, state: str, detail: str = "") -> None:
        self.state = state
        self.message = "NVML ok" if state == "ok" else _STATE_MESSAGES[state].format(detail=detail)

    def _query(self, function: str, *args: Any, default: Any = None) -> Any:
        """The one guarded NVML call: any NVML error, a function this binding or driver lacks,
        or undecodable text gives `default`."""
        nvml = self._nvml
        try:
            return getattr(nvml, function)(*args)
        except (AttributeError, UnicodeDecodeError):
            return default
        except Exception as exc:
            if isinstance(exc, getattr(nvml, "NVMLError", ())):
                return default
            raise

    def system(self) -> dict:
        cuda = self._query("nvmlSystemGetCudaDriverVersion_v2") or self._query("nvmlSystemGetCudaDriverVersion")
        return {
            "driver_version": _text(self._query("nvmlSystemGetDriverVersion")),
            "cuda_version": f"{cuda // 1000}.{cuda % 1000 // 10}" if isinstance(cuda, int) and cuda > 0 else None,
        }

    def device_count(self) -> int:
        return len(self._handles)

    def identity(self, position: int) -> dict:
        nvml_index, handle = self._handles[position]
        return {"nvml_index": nvml_index, "uuid": _text(self._query("nvmlDeviceGetUUID", handle)) or ""}

    def device_info(self, position: int) -> dict:
        nvml_index, handle = self._handles[position]
        cc = self._query("nvmlDeviceGetCudaComputeCapability", handle)
        cc = tuple(cc) if cc else None
        mig = self._query("nvmlDeviceGetMigMode", handle)
        limit_mw = self._query("nvmlDeviceGetEnforcedPowerLimit", handle)
        info = self.device_sample(position)
        memory_total = info.pop("memory_total_bytes")
        return {
            "name": _text(self._query("nvmlDeviceGetName", handle)) or "unknown GPU",
            "uuid": _text(self._query("nvmlDeviceGetUUID", handle)) or "",
            "memory_total_bytes": memory_total or 0,
            "memory_free_bytes": info.pop("memory_free_bytes"),
            "compute_capability": cc,
            "bf16": bool(cc) and cc >= (8, 0),
            "power_limit_w": limit_mw / 1000 if isinstance(limit_mw, (int, float)) else None,
            "processes": self._processes(handle),
            "mig_mode": bool(mig[0]) if mig else None,
            "nvml_index": nvml_index,
            **info,
        }

    def device_sample(self, position: int) -> dict:
        handle = self._handles[position][1]
        memory = self._query("nvmlDeviceGetMemoryInfo", handle)
        util = self._query("nvmlDeviceGetUtilizationRates", handle)
        temperature = self._query("nvmlDeviceGetTemperature", handle, getattr(self._nvml, "NVML_TEMPERATURE_GPU", 0))
        power_mw = self._query("nvmlDeviceGetPowerUsage", handle)
        return {
            "memory_used_bytes": _number(getattr(memory, "used", None)),
            "memory_total_bytes": _number(getattr(memory, "total", None)),
            "memory_free_bytes": _number(getattr(memory, "free", None)),
            "utilization_pct": _number(getattr(util, "gpu", None)),
            "temperature_c": _number(temperature),
            "power_w": power_mw / 1000 if isinstance(power_mw, (int, float)) else None,
        }

    def _processes(self, handle: Any) -> list[dict]:
        found = []
        for proc in self._query("nvmlDeviceGetComputeRunningProcesses", handle, default=[]) or []:
            pid = getattr(proc, "pid", None)
            if pid is None:
                continue
            used = getattr(proc, "usedGpuMemory", None)  # None under MIG or WDDM: N/A
            found.append({"pid": pid, "name": _process_name(pid) or _text(self._query("nvmlSystemGetProcessName", pid)),
                          "used_bytes": _number(used)})
        return found

    def host(self) -> dict | None:
        return None

    def visible_devices(self) -> str | None:
        return self._visible if self._visible is not None else os.environ.get("CUDA_VISIBLE_DEVICES")


class RecordedBackend:
    """Replays a recording: the JSON that `ftwiz gpus --json` prints (Hardware.to_dict()), as a
    path or an already loaded dict. The recorded GPUs are replayed as they were seen; pass
    `visible_devices` to apply a CUDA_VISIBLE_DEVICES to them."""

    def __init__(self, source: str | os.PathLike | dict, visible_devices: str | None = None):
        if isinstance(source, dict):
            data = source
        else:
            path = Path(source)
            try:
                data = json.loads(path.read_text())
            except FileNotFoundError:
                raise UserError(f"{path}: recording not found") from None
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict) or not isinstance(data.get("gpus", []), list):
            raise UserError("recording: expected the object that `ftwiz gpus --json` prints")
        self._data = data
        self._gpus = [
            {**gpu, "nvml_index": gpu.get("nvml_index", gpu.get("index", position))}
            for position, gpu in enumerate(data.get("gpus", []))
        ]
        self._visible = visible_devices
        self.state = data.get("nvml_state", "ok" if self._gpus else "no-gpu")
        self.message = data.get("message", "recorded")

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def system(self) -> dict:
        return {"driver_version": self._data.get("driver_version"), "cuda_version": self._data.get("cuda_version")}

    def device_count(self) -> int:
        return len(self._gpus)

    def identity(self, position: int) -> dict:
        gpu = self._gpus[position]
        return {"nvml_index": gpu["nvml_index"], "uuid": gpu.get("uuid") or ""}

    def device_info(self, position: int) -> dict:
        return {k: v for k, v in self._gpus[position].items() if k != "index"}

    def device_sample(self, position: int) -> dict:
        gpu = self._gpus[position]
        keys = ("memory_used_bytes", "memory_total_bytes", "utilization_pct", "temperature_c", "power_w")
        return {key: gpu.get(key) for key in keys}

    def host(self) -> dict | None:
        keys = ("cpu_count", "cpu_name", "ram_total_bytes", "ram_available_bytes", "disk_free_bytes")
        return {key: self._data[key] for key in keys if key in self._data} or None

    def visible_devices(self) -> str | None:
        return self._visible


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value if isinstance(value, str) else None


def _number(value: Any) -> Any:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _process_name(pid: int) -> str | None:
    """The name of a PID this process can see; None for another container's or user's."""
    import psutil

    try:
        return psutil.Process(pid).name()
    except (psutil.Error, OSError):
        return None


def visible_order(visible: str | None, gpus: list[dict]) -> list[int] | None:
    """Positions (into `gpus`, each with nvml_index and uuid) that CUDA_VISIBLE_DEVICES exposes,
    in CUDA order; None when it is unset or names MIG instances (which NVML's GPU list cannot
    map). Like CUDA: entries are indices or (prefixes of) UUIDs, and the list stops at the first
    entry that names no GPU."""
    if visible is None:
        return None
    entries = [part.strip() for part in visible.split(",")]
    if any(entry.startswith("MIG-") for entry in entries):
        return None
    order: list[int] = []
    for entry in entries:
        if entry.isdigit():
            match = next((i for i, g in enumerate(gpus) if g.get("nvml_index") == int(entry)), None)
        else:
            uuid = entry if entry.startswith("GPU-") else "GPU-" + entry
            hits = [i for i, g in enumerate(gpus) if entry and (g.get("uuid") or "").startswith(uuid)]
            match = hits[0] if len(hits) == 1 else None
        if match is None or match in order:
            break
        order.append(match)
    return order


def _host_facts(path: str | os.PathLike) -> dict:
    import psutil

    memory = psutil.virtual_memory()
    try:
        disk_free = psutil.disk_usage(str(_existing_parent(Path(path)))).free
    except OSError:
        disk_free = None
    return {
        "cpu_count": psutil.cpu_count(logical=True),
        "cpu_name": _cpu_name(),
        "ram_total_bytes": memory.total,
        "ram_available_bytes": memory.available,
        "disk_free_bytes": disk_free,
    }


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


RECORDING_ENV = "FTWIZ_GPU_RECORDING"


def default_backend() -> Backend:
    """NVML, unless $FTWIZ_GPU_RECORDING names a recording (`ftwiz gpus --json` from another
    machine) to plan and demo against as if it were this one."""
    recording = os.environ.get(RECORDING_ENV)
    return RecordedBackend(recording) if recording else NvmlBackend()


_HOST_KEYS = {"cpu_count", "cpu_name", "ram_total_bytes", "ram_available_bytes", "disk_free_bytes"}


def _visible_positions(backend: Backend) -> tuple[list[int], int]:
    """Positions of the GPUs training will see, in CUDA order, and how many NVML sees in all."""
    count = backend.device_count() if backend.state == "ok" else 0
    order = visible_order(backend.visible_devices(), [backend.identity(p) for p in range(count)])
    return (list(range(count)) if order is None else order), count


def detect_hardware(backend: Backend | None = None, path: str | os.PathLike = ".") -> Hardware:
    """Everything the planner needs to know about this machine; never raises for a missing
    GPU, driver or library. `path` is where runs and models will be written (its disk is measured)."""
    backend = backend if backend is not None else default_backend()
    backend.open()
    try:
        positions, count = _visible_positions(backend)
        system = backend.system() if backend.state == "ok" else {}
        gpus = [GPU.from_dict({**backend.device_info(p), "index": i}) for i, p in enumerate(positions)]
    finally:
        backend.close()
    for gpu in gpus:
        gpu.driver_version = gpu.driver_version or system.get("driver_version")
        gpu.cuda_version = gpu.cuda_version or system.get("cuda_version")
    visible = backend.visible_devices()
    message = backend.message
    if backend.state == "ok":
        message = f"{len(gpus)} GPU(s): " + ", ".join(sorted({g.name for g in gpus}))
        if len(gpus) < count:
            message += f" ({count - len(gpus)} of {count} hidden by CUDA_VISIBLE_DEVICES={visible!r})"
        if not gpus:
            message = f"CPU only: CUDA_VISIBLE_DEVICES={visible!r} hides all {count} GPU(s)."
        if any(g.mig_mode for g in gpus):
            message += "; MIG is on: training sees MIG instances (per-process memory reads N/A)"
    recorded = backend.host() or {}
    host = recorded if _HOST_KEYS <= set(recorded) else {**_host_facts(path), **recorded}
    return Hardware(
        gpus=gpus,
        nvml_state=backend.state,
        message=message,
        disk_path=str(path),
        driver_version=system.get("driver_version"),
        cuda_version=system.get("cuda_version"),
        cuda_visible_devices=visible,
        **{key: host.get(key) for key in _HOST_KEYS},
    )


class GpuSampler:
    """Live memory/utilisation/temperature/power of the GPUs training sees, for the monitoring
    panes. NVML is initialised once and handles reused: a sample is a handful of reads.
    Call close() (or use it as a context manager) when done."""

    def __init__(self, backend: Backend | None = None, clock: Callable[[], float] = time.time):
        self._backend = backend if backend is not None else default_backend()
        self._clock = clock
        self._backend.open()
        self._positions, _ = _visible_positions(self._backend)

    @property
    def state(self) -> str:
        return self._backend.state

    @property
    def message(self) -> str:
        return self._backend.message

    def sample(self) -> list[GpuSample]:
        """One reading per visible GPU (empty on a CPU-only machine)."""
        now = self._clock()
        samples = []
        for cuda_index, position in enumerate(self._positions):
            reading = self._backend.device_sample(position)
            samples.append(GpuSample(
                index=cuda_index,
                t=now,
                memory_used_bytes=reading.get("memory_used_bytes"),
                memory_total_bytes=reading.get("memory_total_bytes"),
                utilization_pct=reading.get("utilization_pct"),
                temperature_c=reading.get("temperature_c"),
                power_w=reading.get("power_w"),
            ))
        return samples

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> GpuSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def known_gpu(name: str) -> GPU:
    """A GPU as the datasheet describes it, for planning with --gpu NAME on another machine:
    all memory free, no processes. UserError for a name the table lacks."""
    from ftwiz.core.cost import gpu_spec

    spec = gpu_spec(name)
    total = spec.memory_mib * 2**20
    return GPU(
        index=0,
        name=spec.name,
        uuid="",
        memory_total_bytes=total,
        memory_used_bytes=0,
        memory_free_bytes=total,
        driver_version=None,
        cuda_version=None,
        compute_capability=spec.compute_capability,
        bf16=spec.bf16,
        nvml_index=0,
    )
