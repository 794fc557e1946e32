"""GPU detection from `docker info` and the device choice per mode (stackcheck.gpu), on fake engine info."""

from __future__ import annotations

from typing import Any

import pytest

from stackcheck import gpu
from stackcheck.errors import StackError
from stackcheck.gpu import Device, GpuMode

# What this machine's engine (Docker 20.10, no GPU) reports, and the same with the NVIDIA
# Container Toolkit's runtime registered (`nvidia-ctk runtime configure --runtime=docker`).
CPU_ONLY: dict[str, Any] = {
    "Runtimes": {"io.containerd.runc.v2": {"path": "runc"}, "runc": {"path": "runc"}},
    "DefaultRuntime": "runc",
    "DiscoveredDevices": None,
}
NVIDIA_RUNTIME: dict[str, Any] = {
    **CPU_ONLY,
    "Runtimes": {**CPU_ONLY["Runtimes"], "nvidia": {"path": "nvidia-container-runtime"}},
}
# Docker 28+ with CDI: devices listed by the engine, no runtime of NVIDIA's name.
NVIDIA_CDI: dict[str, Any] = {
    **CPU_ONLY,
    "DiscoveredDevices": [
        {"Source": "cdi", "ID": "nvidia.com/gpu=all"},
        {"Source": "cdi", "ID": "nvidia.com/gpu=0"},
        {"Source": "cdi", "ID": "vendor.example/fpga=0"},
    ],
}


def test_a_cpu_only_engine_runs_an_optional_gpu_service_on_cpu_and_says_why() -> None:
    choice = gpu.choose(GpuMode.OPTIONAL, CPU_ONLY, "ollama")
    assert (choice.device, choice.requests) == (Device.CPU, ())
    assert choice.reason.startswith("ollama: CPU")
    assert "no NVIDIA runtime (runtimes: io.containerd.runc.v2, runc)" in choice.reason
    assert gpu.device_requests("optional", CPU_ONLY) == []


def test_required_without_a_gpu_is_one_clear_error() -> None:
    with pytest.raises(StackError) as err:
        gpu.choose("required", CPU_ONLY, "ollama")
    assert 'ollama has gpu = "required" but the Docker engine has no GPU' in err.value.problem
    assert "NVIDIA" in err.value.fix
    assert 'gpu = "optional"' in err.value.fix


@pytest.mark.parametrize("mode", [GpuMode.OPTIONAL, GpuMode.REQUIRED])
def test_an_nvidia_runtime_gives_the_container_every_gpu(mode: GpuMode) -> None:
    choice = gpu.choose(mode, NVIDIA_RUNTIME, "ollama")
    assert choice.device is Device.GPU
    # Exactly what `docker run --gpus all` sends.
    assert [dict(r) for r in choice.requests] == [
        {"Driver": "", "Count": -1, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}
    ]
    assert "NVIDIA runtime 'nvidia' (nvidia-container-runtime)" in choice.reason


def test_a_runtime_found_by_its_path_counts_too() -> None:
    info = {**CPU_ONLY, "Runtimes": {"gpu": {"path": "/usr/bin/nvidia-container-runtime"}}}
    assert gpu.choose("optional", info).device is Device.GPU


def test_cdi_devices_are_requested_by_their_ids() -> None:
    (request,) = gpu.device_requests("required", NVIDIA_CDI)
    assert (request.driver, request.device_ids) == ("cdi", ["nvidia.com/gpu=0", "nvidia.com/gpu=all"])


def test_off_stays_on_cpu_even_with_a_gpu() -> None:
    choice = gpu.choose("off", NVIDIA_RUNTIME, "ollama")
    assert (choice.device, choice.requests, choice.reason) == (Device.CPU, (), 'ollama: CPU (gpu = "off")')


@pytest.mark.parametrize("info", [{}, {"Runtimes": None, "DiscoveredDevices": None}, {"Runtimes": {"odd": "x"}}])
def test_missing_or_odd_engine_info_means_no_gpu(info: dict[str, Any]) -> None:
    assert gpu.choose("optional", info).device is Device.CPU
    with pytest.raises(StackError):
        gpu.choose("required", info)


def test_an_unknown_mode_names_the_choices() -> None:
    with pytest.raises(StackError) as err:
        gpu.choose("auto", CPU_ONLY)
    assert err.value.problem == "gpu = 'auto' is not a GPU mode"
    assert err.value.fix == 'write gpu = "optional" | "required" | "off"'
    with pytest.raises(StackError, match=r"services\.llm\.gpu = 'yes'"):
        GpuMode.parse("yes", "services.llm.gpu")
