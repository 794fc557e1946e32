"""Ollama built here from the Go module proxy, with a tiny generated model, answering for real.

The `ollama-tiny` image (stacks/images/ollama-tiny) boots through `stackcheck.Stack` from a
one-service stack file (data/ollama/stack.toml): the model is listed, `/api/generate` and
`/v1/chat/completions` return tokens, streamed one piece at a time, at a measured CPU rate; it
runs as a non-root user and is published on 127.0.0.1 only. The model is random, so the words
are gibberish; tokenizer, weights, sampling and streaming are Ollama's own.

Run under the engine lock:
    flock /tmp/stackcheck-engine.lock .venv/bin/python -m pytest tests/integration/test_ollama.py
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from stackcheck import engine, gpu, images
from stackcheck.errors import StackError
from stackcheck.stack import RUN_LABEL, Stack

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.xdist_group("test_ollama")]

STACK_FILE = Path(__file__).parent / "data" / "ollama" / "stack.toml"
MODEL = "stackcheck-tiny"
UID = 10010
TOKENS = 64
# A floor far under what this build does (about 1000 tokens/s on one thread): it catches a build that
# lost its native code path or a model that grew, not a busy host.
MIN_TOKENS_PER_S = 200.0


@pytest.fixture(scope="module")
def ollama() -> Iterator[Stack]:
    with Stack.from_file(STACK_FILE) as stack:
        print(f"\nollama-tiny booted in {stack.boot_seconds:.1f}s")
        yield stack


@pytest.fixture(scope="module")
def api(ollama: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ollama.url("ollama", 11434), timeout=60) as client:
        yield client


def test_the_tiny_model_is_listed(api: httpx.Client) -> None:
    response = api.get("/api/tags")
    assert response.status_code == 200, response.text
    models = {m["name"]: m for m in response.json()["models"]}
    assert f"{MODEL}:latest" in models, f"models listed: {sorted(models)}"
    tiny = models[f"{MODEL}:latest"]
    assert tiny["details"]["family"] == "llama"
    assert tiny["size"] < 5_000_000
    version = api.get("/api/version").json()["version"]
    assert version == "0.17.4", "the version stamped by the catalog's ldflags"


def test_generate_returns_tokens_at_a_measured_cpu_rate(api: httpx.Client) -> None:
    warm_up = {"model": MODEL, "prompt": "warm up", "stream": False, "options": {"num_predict": 1}}
    api.post("/api/generate", json=warm_up)  # the first call loads the model
    body = {"model": MODEL, "prompt": "A stack is", "stream": False, "options": {"num_predict": TOKENS, "seed": 7}}
    response = api.post("/api/generate", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["done"] is True
    assert out["response"].strip(), "no text came back"
    assert out["prompt_eval_count"] > 3, "the prompt went through the tokenizer"
    # Random weights rarely pick the end token: the answer runs to the limit.
    assert (out["eval_count"], out["done_reason"]) == (TOKENS, "length")
    rate = out["eval_count"] / (out["eval_duration"] / 1e9)
    prompt_rate = out["prompt_eval_count"] / (out["prompt_eval_duration"] / 1e9)
    print(f"\ngenerate: {out['eval_count']} tokens at {rate:.0f} tokens/s (prompt {prompt_rate:.0f} tokens/s), CPU")
    assert rate > MIN_TOKENS_PER_S, f"{rate:.0f} tokens/s on CPU (floor {MIN_TOKENS_PER_S:g})"
    # The same seed samples the same tokens: sampling is Ollama's, not a canned answer.
    again = api.post("/api/generate", json=body).json()
    assert again["response"] == out["response"]


def test_generate_streams_one_piece_at_a_time(api: httpx.Client) -> None:
    body = {"model": MODEL, "prompt": "Tell me", "options": {"num_predict": 32}}
    started = time.monotonic()
    arrivals: list[tuple[float, dict[str, object]]] = []
    with api.stream("POST", "/api/generate", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        for line in response.iter_lines():
            if line:
                arrivals.append((time.monotonic() - started, json.loads(line)))
    pieces = [chunk for _, chunk in arrivals if not chunk["done"]]
    assert len(pieces) >= 16, f"{len(pieces)} streamed pieces for 32 tokens"
    assert all(isinstance(c["response"], str) for c in pieces)
    assert arrivals[-1][1]["done"] is True
    assert arrivals[-1][1]["eval_count"] == 32
    first, last = arrivals[0][0], arrivals[-1][0]
    print(f"\nstream: first piece after {first * 1000:.0f} ms, last after {last * 1000:.0f} ms")
    assert first < last, "the pieces arrived together, not streamed"


def test_openai_chat_completions_return_tokens(api: httpx.Client) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 24, "seed": 3}
    response = api.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["object"] == "chat.completion"
    assert out["choices"][0]["message"]["role"] == "assistant"
    assert out["choices"][0]["message"]["content"]
    assert (out["choices"][0]["finish_reason"], out["usage"]["completion_tokens"]) == ("length", 24)


def test_openai_chat_completions_stream_server_sent_events(api: httpx.Client) -> None:
    # Seeded: the byte tokens of one UTF-8 character arrive as one piece, so unseeded 16 tokens made
    # 8-14 non-empty pieces in 8 runs here, and 7 once in CI; seed 3 makes 9 every time.
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 16,
        "stream": True,
        "seed": 3,
    }
    events: list[str] = []
    with api.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    deltas = [c["choices"][0]["delta"].get("content", "") for c in chunks]
    assert sum(1 for d in deltas if d) >= 8, f"{len(deltas)} chunks: {deltas}"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_it_runs_as_its_own_non_root_user(ollama: Stack) -> None:
    container = ollama.service("ollama").docker
    container.reload()
    assert container.attrs["Config"]["User"] == f"{UID}:{UID}"
    top = container.top(ps_args="-o pid,uid,comm")
    uids = {int(row[1]) for row in top["Processes"]}
    assert uids == {UID}, f"processes: {top['Processes']}"


def test_the_api_is_published_on_loopback_only(ollama: Stack) -> None:
    container = ollama.service("ollama").docker
    container.reload()
    bindings = container.attrs["NetworkSettings"]["Ports"]["11434/tcp"]
    assert bindings, "11434 is not published"
    assert {b["HostIp"] for b in bindings} == {"127.0.0.1"}, bindings


def test_without_the_model_the_checks_fail_clearly() -> None:
    """The broken variant: the bare `ollama` image has no model, and the checks above would say so."""
    client = engine.client()
    tag = images.require("ollama", client)
    # Labelled like a run's containers, so `stackcheck down --all` finds it if this process dies.
    labels = {RUN_LABEL: f"test-ollama-{os.getpid()}"}
    container = client.containers.run(tag, detach=True, ports={"11434/tcp": ("127.0.0.1", None)}, labels=labels)
    try:
        container.reload()
        port = container.attrs["NetworkSettings"]["Ports"]["11434/tcp"][0]["HostPort"]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:
            deadline = time.monotonic() + 30
            while True:
                try:
                    tags = api.get("/api/tags")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, container.logs(tail=20).decode(errors="replace")
                    time.sleep(0.2)
            assert tags.json()["models"] == []
            missing = api.post("/api/generate", json={"model": MODEL, "prompt": "x", "stream": False})
            assert missing.status_code == 404
            assert f"model '{MODEL}' not found" in missing.json()["error"]
    finally:
        container.remove(force=True, v=True)


def test_this_engine_runs_ollama_on_cpu_and_says_why() -> None:
    info = engine.client().info()
    choice = gpu.choose(gpu.GpuMode.OPTIONAL, info, "ollama")
    print(f"\n{choice.reason}")
    if choice.device is gpu.Device.CPU:
        with pytest.raises(StackError, match='gpu = "required" but the Docker engine has no GPU'):
            gpu.choose(gpu.GpuMode.REQUIRED, info, "ollama")
    else:
        assert gpu.device_requests(gpu.GpuMode.REQUIRED, info, "ollama")


@pytest.mark.gpu
def test_where_the_engine_has_a_gpu_the_container_gets_it() -> None:
    client = engine.client()
    requests = gpu.device_requests(gpu.GpuMode.OPTIONAL, client.info(), "ollama")
    if not requests:
        pytest.skip("no NVIDIA GPU on this engine (CPU fallback): gpu tests run only where one is present")
    tag = images.require("ollama", client)
    try:
        out = client.containers.run(
            tag, entrypoint=["sh", "-c", "ls /dev/nvidia*"], device_requests=requests, remove=True,
            labels={RUN_LABEL: f"test-ollama-{os.getpid()}"},
        )  # fmt: skip
    except docker.errors.ContainerError as exc:
        pytest.fail(f"the GPU was requested but no NVIDIA device reached the container: {exc}")
    assert b"/dev/nvidia0" in out
