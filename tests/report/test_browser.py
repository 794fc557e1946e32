"""The report in a real browser: headless Chromium renders it offline, and a screenshot is kept."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from stackcheck.report import render
from tests.report.conftest import MakeRun, history_entries, sample

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: apt-get install chromium (scripts/bootstrap.sh does)", pytrace=False)
    return path


def browse(run_dir: Path, tmp_path: Path, *mode: str) -> str:
    proc = subprocess.run(
        [
            chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            *mode,
            (run_dir / "index.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow
def test_report_renders_in_headless_chromium(make_run: MakeRun, tmp_path: Path) -> None:
    run_dir = make_run("failing", load=[sample("load-run")], history=history_entries())
    render(run_dir)

    dom = browse(run_dir, tmp_path, "--dump-dom")
    assert re.search(r'<div class="verdict fail" id="verdict"><span class="word">FAIL</span>', dom)
    for table in ("summary", "phases", "compliance findings", "percentiles", "journal"):
        body = re.search(rf'<table class="{table}">.*?<tbody>(.*?)</tbody>', dom, flags=re.S)
        assert body is not None, table
        assert body.group(1).count("<tr") >= 1, table
    charts = re.findall(r'<figure class="chart" data-chart="([a-z0-9-]+)">(.*?)</figure>', dom, flags=re.S)
    assert [kind for kind, _ in charts] == ["load-latency", "chaos-timeline", "chaos-recovery", "history-p95"]
    for kind, svg in charts:
        assert svg.lstrip().startswith("<svg"), kind
        assert svg.count("<path") > 5, kind

    screenshot = run_dir / "report.png"
    browse(run_dir, tmp_path, f"--screenshot={screenshot}", "--window-size=1400,4000")
    assert screenshot.stat().st_size > 50_000
    with Image.open(screenshot) as image:
        assert image.size == (1400, 4000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None
    assert len(colours) > 50  # text, a red banner, charts: not one blank colour
    assert any(r > 150 and g < 80 and b < 80 for _, (r, g, b) in colours)  # the red FAIL banner
