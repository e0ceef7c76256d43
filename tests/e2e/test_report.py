"""`snakemake --report`: every figure and the score tables in the HTML report, with captions and labels, and the
report opened in headless Chromium (its landing page and a figure's page, screenshots checked for real content).

Chromium is Debian's `chromium` (`apt-get install chromium`); without it the browser test skips, and
FOMOFLUX_REQUIRE_CHROMIUM=1 (set by .ci/run, which installs it) makes that a failure. The screenshots stay in the
test project, under results/report/ (the path is printed: `pytest -s` shows it).
"""

from __future__ import annotations

import base64
import html.parser
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

WINDOW = (1400, 1000)
# finetune's colour in every trajectory figure: the first of plots.PALETTE (Okabe-Ito blue)
FIRST_RUN_RGB = (0x00, 0x72, 0xB2)


def _add_schedule_and_comparison(cfg: dict) -> None:
    # A second schedule (the schedules figure needs two) and a comparison: every kind of figure is in the report.
    cfg["runs"]["finetune_constant"] = {"method": "finetune", "training": {"schedule": "constant"}}
    cfg["figures"] = {**cfg.get("figures", {}), "comparisons": {
        "schedules": {"runs": ["finetune", "finetune_constant", "zeroshot"], "title": "cosine vs constant",
                      "labels": {"finetune": "cosine", "finetune_constant": "constant"}},
    }}


@pytest.fixture(scope="module")
def reported(finished, tmp_path_factory):
    """A copy of the finished test run with a second schedule and a comparison, brought up to date, and its report."""
    project = finished.copy(tmp_path_factory.mktemp("report") / "project")
    project.edit_config(_add_schedule_and_comparison)
    project.snakemake()
    report = project.path("report", "report.html")
    report.parent.mkdir(parents=True, exist_ok=True)
    project.snakemake("--report", str(report))
    project.report = report
    return project


def _embedded(page: str, name: str):
    """A JSON variable the report embeds (`var results = {...};` in `<script id="results">`)."""
    match = re.search(rf'<script id="{name}">\s*var \w+ = (.*?);\s*</script>', page, re.S)
    assert match, f"no <script id={name!r}> in the report"
    return json.loads(match.group(1))


def _decoded(data_uri: str) -> bytes:
    return base64.b64decode(data_uri.split("base64,", 1)[1])


class _Rows(html.parser.HTMLParser):
    """Rows of cell texts of the first table of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._tables = 0
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self._tables += tag == "table"
        if self._tables == 1 and tag == "tr":
            self.rows.append([])
        elif self._tables == 1 and tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if self._cell is not None and tag in ("td", "th"):
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_one_schedule_draws_no_schedules_figure(finished):
    # config/test.yaml trains every run with the default cosine schedule: nothing to compare
    cfg = finished.read_config()
    default = cfg["training"].get("schedule", "cosine")
    assert {run.get("training", {}).get("schedule", default) for run in cfg["runs"].values()} == {"cosine"}
    assert not finished.path("figures", "schedules.png").exists()
    assert finished.path("figures", "budgets.png").exists()


def test_report_holds_every_figure_and_the_tables(reported):
    page = reported.report.read_text()
    results = _embedded(page, "results")
    categories = _embedded(page, "categories")
    figures = sorted(p.relative_to(reported.root).as_posix() for p in reported.path("figures").glob("*.png"))
    assert {Path(f).stem for f in figures} >= {"trajectories", "full_test_sets", "schedules", "budgets",
                                               "compare_schedules", "heatmap_finetune", "heatmap_finetune_constant",
                                               "heatmap_zeroshot"}
    tables = [f"results/tables/{name}.{ext}" for name in ("final_scores", "full_test_sets") for ext in ("csv", "html")]
    assert sorted(results) == sorted(figures + tables), "every figure's PNG and the four tables, nothing else"
    for path in figures:
        entry = results[path]
        assert entry["mime_type"] == "image/png" and _decoded(entry["data_uri"]).startswith(b"\x89PNG")
        assert set(entry["labels"]) == {"figure", "run", "method"} and entry["caption"].strip(), path
    heatmap = results["results/figures/heatmap_finetune_constant.png"]
    assert heatmap["labels"] == {"run": "finetune_constant", "method": "finetune", "figure": "heatmap"}
    assert "finetune_constant" in heatmap["caption"]  # the caption template saw the run's wildcard
    assert "A<sub>ZS</sub>" in results["results/figures/trajectories.png"]["caption"]
    assert results["results/figures/compare_schedules.png"]["labels"]["run"] == "finetune, finetune_constant, zeroshot"
    assert set(categories) == {"Figures", "Heatmaps", "Tables"}
    assert set(categories["Figures"]) == {"Trajectories", "Full test sets", "Comparison: schedules", "Schedules",
                                          "Budgets"}
    assert set(categories["Heatmaps"]) == {"finetune", "ema_merge", "lora", "offline_merge", "zeroshot"}
    # the workflow description page, rendered from workflow/report/workflow.rst with the config
    description = json.loads(re.search(r"var workflow_desc = (.*?);\s*</script>", page, re.S).group(1))
    assert "fomo-micro-vit" in description and "A<sub>KA</sub>" in description

    # The table in the report holds the final scores of fomoflux.duckdb, in %.
    rows = _Rows()
    rows.feed(_decoded(results["results/tables/final_scores.html"]["data_uri"]).decode())
    header, *body = rows.rows
    column = {name: i for i, name in enumerate(header)}
    shown = {row[column["run"]]: row for row in body}
    con = duckdb.connect(str(reported.path("fomoflux.duckdb")), read_only=True)
    final = con.execute("SELECT run, A_KA, A_ZS, GM FROM final").fetchall()
    assert set(shown) == {run for run, *_ in final} == set(reported.read_config()["runs"])
    for run, *scores in final:
        assert [shown[run][column[f"{s} (%)"]] for s in ("A_KA", "A_ZS", "GM")] == [f"{100 * v:.1f}" for v in scores]
    assert shown["finetune_constant"][column["schedule"]] == "constant"
    assert shown["zeroshot"][column["schedule"]] == "-"


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        message = "headless Chromium is not installed: apt-get install chromium"
        if os.environ.get("FOMOFLUX_REQUIRE_CHROMIUM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def _browse(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Load ``page`` in headless Chromium, give its scripts 20 s of (virtual) time, then do ``args``."""
    cmd = [_chromium(), "--headless", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
           f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=20000",
           *args, page.as_uri()]
    if os.geteuid() == 0:  # Chromium's sandbox refuses root (CI containers)
        cmd.insert(1, "--no-sandbox")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return proc


def _rendered_app(dom: str) -> str:
    """The part of a dumped DOM that the report's JavaScript app rendered (the #app element, before the scripts)."""
    start = dom.index('<div id="app">')
    return dom[start:dom.index("<script", start)]


def _check_screenshot(path: Path) -> Image.Image:
    image = Image.open(path).convert("RGB")
    assert image.size == WINDOW
    colours = image.getcolors(maxcolors=WINDOW[0] * WINDOW[1])
    most = max(count for count, _ in colours)
    assert len(colours) > 200, f"{path}: {len(colours)} colours, the page looks blank"
    assert most < 0.9 * WINDOW[0] * WINDOW[1], f"{path}: one colour covers {most} pixels, the page looks blank"
    return image


def _pixels_near(image: Image.Image, rgb: tuple[int, int, int], tolerance: int = 24) -> int:
    return sum(count for count, colour in image.getcolors(maxcolors=WINDOW[0] * WINDOW[1])
               if max(abs(a - b) for a, b in zip(colour, rgb)) <= tolerance)


def test_report_renders_in_headless_chromium(reported, tmp_path):
    profile = tmp_path / "chromium-profile"
    # The landing page: the app renders its menu (the result categories) and the workflow description.
    app = _rendered_app(_browse(reported.report, profile, "--dump-dom").stdout)
    for text in ("Figures", "Heatmaps", "Tables", "Workflow", "knowledge accumulation"):
        assert text in app, f"{text!r} is not in the rendered report"
    landing = reported.path("report", "screenshot.png")
    _browse(reported.report, profile, f"--screenshot={landing}")
    _check_screenshot(landing)

    # A figure's page: the report has no deep links, so a copy of it opens the trajectory figure the way a click on
    # its entry does (the app's own setView), once the app has started.
    opener = """<script>
const fomofluxOpen = setInterval(function () {
  if (typeof app === "undefined" || !app) return;
  clearInterval(fomofluxOpen);
  const path = Object.keys(results).find((p) => p.endsWith("figures/trajectories.png"));
  app.setView({navbarMode: "resultinfo", content: "img", contentPath: results[path].data_uri, resultPath: path});
}, 50);
</script>
"""
    page = reported.report.read_text()
    end = page.rindex("</body>")
    figure_page = reported.path("report", "report_trajectories.html")
    figure_page.write_text(page[:end] + opener + page[end:])
    app = _rendered_app(_browse(figure_page, profile, "--dump-dom").stdout)
    assert re.search(r'<img src="data:image/png;[^"]*filename=trajectories\.png', app), "the figure is not shown"
    assert "plot_trajectories" in app and "black star" in app  # its rule and caption, in the result's panel
    shot = reported.path("report", "screenshot_trajectories.png")
    _browse(figure_page, profile, f"--screenshot={shot}")
    image = _check_screenshot(shot)
    # the figure itself is on screen: the first run's colour, a colour the report's own interface never uses
    assert _pixels_near(image, FIRST_RUN_RGB) > 300, "the trajectory figure is not in the screenshot"
    print(f"\nreport: {reported.report}\nscreenshots: {landing}\n             {shot}")
