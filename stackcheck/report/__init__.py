"""The report of one run, rendered from its results.json alone (so it can be rendered again later).

    render(Path("reports/<run-id>"))   # -> [index.html, summary.md]

index.html is self-contained (inline CSS, charts as inline SVG, no scripts, nothing fetched);
summary.md is for a CI job summary or a pull-request comment. ``drill.render_drill`` writes the
DR drill record of one chaos scenario.
"""

from __future__ import annotations

from pathlib import Path

from stackcheck.results import load_results

__all__ = ["render"]


def render(run_dir: Path) -> list[Path]:
    """Write index.html and summary.md next to ``run_dir/results.json``; the paths written."""
    # Imported here: matplotlib takes a while to import, and the CLI (which imports this package)
    # must not pay for it.
    from stackcheck.report.common import entries_checked
    from stackcheck.report.page import render_page
    from stackcheck.report.summary import render_summary

    results = run_dir / "results.json"
    data = load_results(results)
    with entries_checked(results):
        html, markdown = render_page(data), render_summary(data, run_dir)
    index, summary = run_dir / "index.html", run_dir / "summary.md"
    index.write_text(html)
    summary.write_text(markdown)
    return [index, summary]
