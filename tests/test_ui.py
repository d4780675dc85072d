"""The MLflow UI as a reader sees it, in a real headless browser (Debian's chromium, driven by
playwright): a store with a job and a sweep made from the command line, served by `mlflow ui`.

The saved view is MLflow's UI format, not an API: these tests are what catches a change of it. `make
test-ui` installs the browser and runs them (CI does); elsewhere they are skipped when no browser is
installed. Screenshots go to $ECOPIPE_UI_SCREENSHOTS (make test-ui: .ui-screenshots/), never into git.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ecopipe.names import Tag, TagFamily
from tests.conftest import mlflow_serving, run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = os.environ.get("ECOPIPE_UI_TESTS") == "required"  # make test-ui: a missing browser fails
try:
    from playwright.sync_api import Page, sync_playwright
except ImportError:
    sync_playwright = None

if (CHROMIUM is None or sync_playwright is None) and not REQUIRED:
    pytest.skip("no chromium or playwright here: make test-ui installs them", allow_module_level=True)

pytestmark = [pytest.mark.ui, pytest.mark.timeout(600)]

QUICK = ("model=decision_tree", "monitor=quick", "monitor.trials=2", "monitor.min_window_s=0.05",
         "monitor.idle_s=0.05")  # fmt: skip


@pytest.fixture(scope="module")
def ui(tmp_path_factory) -> Iterator[tuple[str, MlflowClient, str]]:
    """A store holding a job and a two-job sweep, and `mlflow ui` serving it: (address, client, the
    job's run id)."""
    folder = tmp_path_factory.mktemp("ui")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    job = run_cli(f"tracking.uri={store}", *QUICK, cwd=folder)
    assert job.returncode == 0, job.stderr[-2000:]
    sweep = run_cli("-m", f"tracking.uri={store}", *QUICK[1:], "model=logistic_regression,svc",
                    f"hydra.sweep.dir={folder / 'multirun'}", cwd=folder)  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    run_id = job.stdout.split("  run         ")[1].split()[0]
    with mlflow_serving("ui", store) as address:
        yield address, MlflowClient(store), run_id


@pytest.fixture(scope="module")
def browser() -> Iterator[Page]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        # Wide enough that the run list draws every column of the view (it draws only those in sight).
        page = chromium.new_page(viewport={"width": 3200, "height": 1000})
        yield page
        chromium.close()


def screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("ECOPIPE_UI_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"))


def job_runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name("ecopipe").experiment_id
    return [r for r in client.search_runs([experiment]) if Tag.KIND not in r.data.tags]


def test_the_experiments_link_opens_the_run_list_on_the_headline_figures(ui, browser):
    """From the experiment's page, one click: every job a row (the sweep's unfolded), sorted by
    energy, with the compact answer, energy, CO2e and ESS with their units, and whether each is
    measured or an estimate."""
    address, client, _ = ui
    experiment = client.get_experiment_by_name("ecopipe").experiment_id
    browser.goto(f"{address}/#/experiments/{experiment}/runs")
    with browser.context.expect_page() as opened:  # the description's links open a new tab
        browser.get_by_text("Open the headline view").first.click()
    view = opened.value
    view.get_by_text("mJ/1k est.").first.wait_for(timeout=60_000)
    view.wait_for_timeout(1000)  # the rest of the rows
    screenshot(view, "run-list")
    assert "viewStateShareKey=ecopipe-headline" in view.url
    text = view.inner_text("body")
    assert "Sort: headline/energy_J_per_1k" in text
    for header in ("headline/energy_J_per_1k", "headline/co2e_mg_per_1k", "headline/ess_Mparams_per_gCO2e",
                   Tag.FIGURES, Tag.HARDWARE):  # fmt: skip
        assert view.get_by_role("columnheader", name=header, exact=True).count() >= 1, header
    runs = sorted(job_runs(client), key=lambda r: r.data.metrics["headline/energy_J_per_1k"])
    assert len(runs) == 3
    # Each job's row, in the order of its energy: its name, its compact answer, its figures as logged.
    positions = [text.index(run.info.run_name[:20]) for run in runs]
    assert positions == sorted(positions)
    for run in runs:
        answer = run.data.tags[Tag.NOTE].splitlines()[0]
        assert " mJ/1k est. · " in answer and " CO2e/1k · ESS " in answer, answer
        assert answer[:45] in text, answer  # the column shows a note's first 50 characters
        assert f"{run.data.metrics['headline/energy_J_per_1k']:g}" in text
        assert f"{run.data.metrics['headline/co2e_mg_per_1k']:g}" in text
    assert text.count("ESTIMATE") >= 3  # the ecopipe.figures column of each job
    view.close()


def test_a_run_page_shows_its_answer_and_its_estimated_power(ui, browser):
    address, client, run_id = ui
    run = client.get_run(run_id)
    experiment = run.info.experiment_id
    browser.goto(f"{address}/#/experiments/{experiment}/runs/{run_id}")
    answer = run.data.tags[Tag.NOTE].splitlines()[0]
    browser.get_by_text(answer).first.wait_for(timeout=60_000)
    browser.get_by_text("per 1,000 inferences, ESTIMATE").first.scroll_into_view_if_needed()
    screenshot(browser, "run-page")
    text = browser.inner_text("body")
    assert "digits" in text and "ecopipe" in text  # the Dataset and Source fields
    for row in ("energy", "CO2e", "ESS"):
        assert browser.get_by_role("cell", name=row, exact=True).count() == 1, row
    browser.goto(f"{address}/#/experiments/{experiment}/runs/{run_id}/system-metrics")
    browser.get_by_text("estimated_power_w.cpu").first.wait_for(timeout=60_000)
    screenshot(browser, "system-metrics")
    assert "estimated_power_w.ram" in browser.inner_text("body")


def test_the_view_is_the_one_the_job_wrote(ui):
    """What the browser opened is the experiment tag, unchanged by the UI (a view opened is not saved)."""
    _, client, _ = ui
    experiment = client.get_experiment_by_name("ecopipe")
    state = json.loads(json.loads(experiment.tags[TagFamily.SHARED_VIEW.of("ecopipe-headline")])["state"])
    assert state["orderByKey"] == "metrics.`headline/energy_J_per_1k`"
