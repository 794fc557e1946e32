"""Streamed answers in a load run: the mix's ``stream`` key, how an SSE event is told apart
(token, error, framing), time to first token in summaries, the ttft_p95_ms objective and the
samples file round trip."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Any

import pytest

from stackcheck import stackfile
from stackcheck.errors import StackFileError
from stackcheck.load import objectives as obj
from stackcheck.load.report import LoadReport, read_samples
from stackcheck.load.stats import LoadSample, summarize
from stackcheck.loadmix import LoadMix, SseEvent, StreamKind, sse_event
from stackcheck.stackfile import LoadObjective

STACK = {
    "stack": {"name": "mini", "entrypoint": "http://web:8080"},
    "networks": {"edge": {}},
    "services": {"web": {"image": "nginx", "networks": {"edge": []}, "ports": [8080]}},
    "objectives": {"load": {"chat": {"p95_ms": 900, "ttft_p95_ms": 200}}},
}


def mix(request: dict[str, Any], tmp_path: Path) -> LoadMix:
    data = json.loads(json.dumps(STACK))
    data["load"] = {"requests": {"chat": {"method": "POST", "path": "/chat", "group": "chat", **request}}}
    parsed = stackfile.parse(data, tmp_path / "stack.toml")
    assert parsed.objectives.load["chat"] == LoadObjective(p95_ms=900, ttft_p95_ms=200)
    assert parsed.load_mix is not None
    return parsed.load_mix


def test_a_mix_request_declares_it_streams_and_the_plan_keeps_it(tmp_path: Path) -> None:
    parsed = mix({"stream": "sse"}, tmp_path)
    assert parsed.requests[0].stream is StreamKind.SSE
    assert LoadMix.from_plan(json.loads(json.dumps(parsed.to_plan()))) == parsed
    assert mix({}, tmp_path).requests[0].stream is None


def test_an_unknown_stream_kind_names_key_and_fix(tmp_path: Path) -> None:
    with pytest.raises(StackFileError) as err:
        mix({"stream": "websocket"}, tmp_path)
    assert "load.requests.chat.stream" in str(err.value)
    assert 'must be "sse" or "bytes", not \'websocket\'' in str(err.value)
    assert 'stream = "sse"' in str(err.value)


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        (b'data: {"delta": "he"}', SseEvent.TOKEN),
        (b'event: message\r\ndata: {"delta": "he"}', SseEvent.TOKEN),
        (b'event: stored\ndata: {"message": {}}', SseEvent.FRAMING),
        (b"data: [DONE]", SseEvent.FRAMING),
        (b": keep-alive comment", SseEvent.FRAMING),
        (b"data:", SseEvent.FRAMING),
        (b'event: error\ndata: {"error": "llm_unavailable"}', SseEvent.ERROR),
    ],
)
def test_server_sent_events_are_told_apart(event: bytes, kind: SseEvent) -> None:
    assert sse_event(event) is kind


def samples(ttfts: list[float | None], error: str = "") -> list[LoadSample]:
    return [LoadSample(i / 10, "chat", "chat", 500.0 + i, 0.0, error, t) for i, t in enumerate(ttfts)]


def test_time_to_first_token_is_summarized_from_the_successful_streams_only() -> None:
    summary = summarize([*samples([float(ms) for ms in range(1, 101)]), *samples([5000.0], "stream-error")], 10)
    assert summary.ttft(95) == 95.0
    assert summary.ttft(50) == 50.0
    assert math.isnan(summarize(samples([None, None]), 10).ttft(95))
    # Reports written before TTFT was measured read back without it.
    data = summary.to_dict()
    del data["ttft_ms"]
    assert type(summary).from_dict(data).ttft_ms == {}


def test_a_ttft_objective_breaches_when_slower_and_when_nothing_streamed() -> None:
    objectives = {"chat": LoadObjective(p95_ms=900, ttft_p95_ms=200)}
    fast, _ = obj.evaluate(objectives, samples([float(ms) for ms in range(100)]), 10)
    assert fast == []
    slow, _ = obj.evaluate(objectives, samples([float(ms) for ms in range(150, 250)]), 10)
    # Nearest rank: the 95th of the 100 values.
    assert [(b.metric, b.target, b.measured) for b in slow] == [(obj.Metric.TTFT_P95, 200, 244.0)]
    unstreamed, _ = obj.evaluate(objectives, samples([None] * 10), 10)
    assert [(b.metric, math.isnan(b.measured)) for b in unstreamed] == [(obj.Metric.TTFT_P95, True)]
    assert "ttft_p95_ms" in obj.breach_table(slow)


def test_the_samples_file_keeps_ttft_and_reads_older_files(tmp_path: Path) -> None:
    rows = samples([12.5, None])
    report = LoadReport(
        "run", "mini", "rev", "http://x", {}, "closed", 1, "now", 1.0, None, summarize(rows, 1), {}, {}, None, [], {}
    )
    report.write(tmp_path, rows)
    assert [s.ttft_ms for s in read_samples(tmp_path)] == [12.5, None]
    with gzip.open(tmp_path / "samples.csv.gz", "wt") as gz:
        gz.write("t_s,endpoint,group,latency_ms,late_ms,error\n0.1,chat,chat,5.0,0.0,\n")
    assert read_samples(tmp_path) == [LoadSample(0.1, "chat", "chat", 5.0, 0.0, "", None)]
