"""GPU-optional services: whether the engine can give a container an NVIDIA GPU, and how to ask.

A service says ``gpu = "optional" | "required" | "off"``. The engine's ``docker info`` tells
what it has: an NVIDIA runtime (``Runtimes``: ``nvidia`` / ``nvidia-container-runtime``, set up
by the NVIDIA Container Toolkit) or NVIDIA devices discovered through CDI
(``DiscoveredDevices``, Docker 28+). ``choose`` turns mode and engine into the device requests
for the container and a sentence for the report saying which device is used and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from docker.types import DeviceRequest

from stackcheck.errors import StackError


class GpuMode(Enum):
    OPTIONAL = "optional"  # the GPU where the engine has one, else CPU
    REQUIRED = "required"  # no GPU, no boot
    OFF = "off"  # CPU even where a GPU is present

    @classmethod
    def parse(cls, value: str, where: str = "gpu") -> GpuMode:
        try:
            return cls(value)
        except ValueError:
            choices = " | ".join(f'"{m.value}"' for m in cls)
            raise StackError(f"{where} = {value!r} is not a GPU mode", f"write {where} = {choices}") from None


class Device(Enum):
    GPU = "gpu"
    CPU = "cpu"


@dataclass(frozen=True)
class GpuChoice:
    mode: GpuMode
    device: Device
    requests: tuple[DeviceRequest, ...]  # for containers.run(device_requests=...)
    reason: str  # for the report


def nvidia_devices(engine_info: Mapping[str, Any]) -> tuple[tuple[DeviceRequest, ...], str]:
    """The device requests that give a container the engine's NVIDIA GPUs, and the evidence; () if none."""
    cdi = sorted(
        str(dev["ID"])
        for dev in engine_info.get("DiscoveredDevices") or ()
        if isinstance(dev, Mapping) and dev.get("Source") == "cdi" and str(dev.get("ID", "")).startswith("nvidia.com/")
    )
    if cdi:
        return (DeviceRequest(driver="cdi", device_ids=cdi),), f"CDI devices {', '.join(cdi)}"
    runtimes = engine_info.get("Runtimes") or {}
    for name, runtime in sorted(runtimes.items()):
        path = str(runtime.get("path", "")) if isinstance(runtime, Mapping) else ""
        if "nvidia" in name or "nvidia" in path:
            # What `docker run --gpus all` sends: every GPU, through the toolkit's device driver.
            return (DeviceRequest(count=-1, capabilities=[["gpu"]]),), f"NVIDIA runtime {name!r} ({path or name})"
    return (), f"no NVIDIA runtime (runtimes: {', '.join(sorted(runtimes)) or 'none'}) and no NVIDIA CDI device"


def choose(mode: GpuMode | str, engine_info: Mapping[str, Any], service: str = "service") -> GpuChoice:
    """The device ``service`` runs on; StackError when the GPU is required and the engine has none."""
    mode = mode if isinstance(mode, GpuMode) else GpuMode.parse(mode)
    if mode is GpuMode.OFF:
        return GpuChoice(mode, Device.CPU, (), f'{service}: CPU (gpu = "off")')
    requests, evidence = nvidia_devices(engine_info)
    if requests:
        return GpuChoice(mode, Device.GPU, requests, f"{service}: GPU ({evidence})")
    if mode is GpuMode.REQUIRED:
        raise StackError(
            f'{service} has gpu = "required" but the Docker engine has no GPU: {evidence}',
            "install the NVIDIA driver and Container Toolkit (`nvidia-ctk runtime configure --runtime=docker`, "
            'restart dockerd), or set gpu = "optional" to run on CPU where there is no GPU',
        )
    return GpuChoice(mode, Device.CPU, (), f'{service}: CPU (gpu = "optional"; {evidence})')


def device_requests(
    mode: GpuMode | str, engine_info: Mapping[str, Any], service: str = "service"
) -> list[DeviceRequest]:
    """``choose(...).requests`` as the list ``containers.run(device_requests=...)`` takes."""
    return list(choose(mode, engine_info, service).requests)
