"""The dashboard in a real headless Chromium, served by `celery durable web`, against real
workers on PostgreSQL + Redis: an operator requeues a dead letter and watches it finish,
cancels a running job, and pauses a schedule. The screenshots in the docs come from here
(set CELERY_DURABLE_SCREENSHOTS=docs/images to write them there)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from celery_durable.scheduling.kinds import every
from celery_durable.store.records import JobState
from tests.conftest import POSTGRES_URL, REQUIRE_SERVICES
from tests.integration.conftest import CELERY, REPO, Cluster, wait_for
from tests.integration.proj import create_app as create_proj_app

pytestmark = [pytest.mark.worker, pytest.mark.postgres, pytest.mark.redis]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (CHROMIUM and CHROMEDRIVER):
        message = (
            "Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        )
        if REQUIRE_SERVICES:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,900")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _screenshot(driver: Any, name: str, tmp_path: Path) -> None:
    directory = Path(os.environ.get("CELERY_DURABLE_SCREENSHOTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(directory / f"web-{name}.png"))


def _until(driver: Any, condition: Callable[[Any], Any], what: str, timeout: float = 30) -> Any:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # htmx swaps fragments under our feet: an element found a moment ago may be gone
    ignored = (NoSuchElementException, StaleElementReferenceException)
    wait = WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=ignored)
    return wait.until(condition, what)


def _click_and_confirm(driver: Any, css: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, css).click()
    alert = _until(driver, lambda d: d.switch_to.alert, "the confirmation dialog")
    alert.accept()


def _state_shown(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, "#job-body h1 .state").text)


def test_an_operator_requeues_a_dead_letter_and_watches_it_finish(
    make_cluster: Callable[..., Cluster], browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    cluster = make_cluster("redis", "postgres")
    cluster.wait_ready(cluster.worker(concurrency=2))
    port = _free_port()
    cluster.web(port)
    base = f"http://127.0.0.1:{port}"
    durable = cluster.durable
    dead = durable.enqueue(cluster.app.tasks["proj.to_dead_letter"]).id
    hostile = "<b>bold</b><img src=x onerror=window.pwned=1>"
    shown = durable.enqueue(cluster.app.tasks["proj.checkout"], hostile, 5, cluster.payments).id
    assert cluster.wait_finished(dead).state is JobState.DEAD

    browser.get(f"{base}/jobs")
    row = f'tr[data-job="{dead}"]'
    _until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f"{row} .state.dead"), "dead row")
    _screenshot(browser, "jobs", tmp_path)
    # a refused action says why on the page (htmx swaps error answers too)
    _click_and_confirm(browser, ".bulk button")  # Retry, with nothing ticked
    _until(browser, lambda d: "no jobs selected" in d.find_element(By.ID, "flash").text, "why")
    # the arguments are text on the page, never markup
    browser.get(f"{base}/jobs/{shown}")
    assert hostile in browser.find_element(By.CSS_SELECTOR, "pre.value").text
    assert not browser.find_elements(By.CSS_SELECTOR, "pre.value b, pre.value img")
    assert browser.execute_script("return window.pwned") is None

    browser.get(f"{base}/dead-letters")
    browser.find_element(By.CSS_SELECTOR, f"{row} a").click()
    _until(browser, lambda d: _state_shown(d) == "dead", "the job page")
    timeline = browser.execute_script(
        "return [...document.querySelectorAll('table.timeline tbody tr')]"
        ".map(r => [r.dataset.position, r.querySelector('.state').textContent])"
    )
    assert timeline[0] == ["1", "succeeded"] and ["2", "failed"] in timeline
    assert "ConnectionError" in browser.find_element(By.CSS_SELECTOR, "#job-body").text
    _screenshot(browser, "job-dead", tmp_path)

    (cluster.effects / "gate-open").touch()
    browser.execute_script("window.notReloaded = true")
    _click_and_confirm(browser, "#job-body .actions button")  # Requeue comes first
    flash = _until(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#flash").text, "flash")
    assert "requeued 1 dead letter" in flash
    _until(browser, lambda d: _state_shown(d) == "succeeded", "the page to show the job done")
    assert browser.execute_script("return window.notReloaded") is True  # live, no reload
    _screenshot(browser, "job-succeeded", tmp_path)
    job = cluster.job(dead)
    assert job is not None and job.state is JobState.SUCCEEDED and job.requeues == 1
    assert cluster.count("d-a") == 1  # the completed first call replayed, it did not rerun

    browser.get(f"{base}/queues")
    _until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "svg.chart rect.ok"), "chart")
    _screenshot(browser, "queues", tmp_path)


def test_a_cancel_from_the_page_reaches_the_running_job(
    make_cluster: Callable[..., Cluster], browser: Any
) -> None:

    cluster = make_cluster("redis", "postgres", step_seconds=0.7)
    cluster.wait_ready(cluster.worker(concurrency=1))
    port = _free_port()
    cluster.web(port)
    job_id = cluster.durable.enqueue(cluster.app.tasks["proj.five_steps"], 1).id
    wait_for(lambda: cluster.committed_calls(job_id) >= 1, 30, "the first call")

    browser.get(f"http://127.0.0.1:{port}/jobs/{job_id}")
    _until(browser, lambda d: _state_shown(d) == "running", "the running job")
    _click_and_confirm(browser, "#job-body .actions button.danger")
    _until(browser, lambda d: _state_shown(d) == "cancelled", "the page to show the cancel")
    ended = lambda: any(n[2] == job_id for n in cluster.notes("postrun"))  # noqa: E731
    wait_for(ended, 30, "the delivery to end")
    job = cluster.job(job_id)
    assert job is not None and job.state is JobState.CANCELLED
    assert cluster.count("s5") == 0  # the body stopped at its next call
    assert cluster.committed_calls(job_id) < 5


def test_a_schedule_paused_on_the_page_stops_firing(
    make_cluster: Callable[..., Cluster], browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    cluster = make_cluster("redis", "postgres")
    api = cluster.durable.schedules
    cluster.beat()
    wait_for(lambda: len(api.runs("every-second", 5)) >= 1, 60, "beat to fire")
    api.add("witness", "proj.ticked", every(1), missed="all")  # proves beat kept ticking
    port = _free_port()
    cluster.web(port)

    browser.get(f"http://127.0.0.1:{port}/schedules")
    row = 'tr[data-schedule="every-second"]'
    _click_and_confirm(browser, f"{row} button")  # Pause comes first
    _until(
        browser,
        lambda d: d.find_element(By.CSS_SELECTOR, f"{row} .state").text == "paused",
        "the row to show the pause",
    )
    assert api.get("every-second").paused
    paused_at = cluster.durable.now()
    witnessed = len(api.runs("witness", 1000))
    wait_for(lambda: len(api.runs("witness", 1000)) >= witnessed + 3, 60, "three more ticks")
    after = [r.nominal_at for r in api.runs("every-second", 1000) if r.nominal_at > paused_at]
    assert after == []
    _screenshot(browser, "schedules", tmp_path)


def test_a_non_loopback_bind_without_credentials_refuses_to_start(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("redis", "postgres")
    refused = subprocess.run(
        [*CELERY, "durable", "web", "--host", "0.0.0.0", "--port", str(_free_port())],
        cwd=REPO,
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert "refusing to serve the dashboard on 0.0.0.0 without authentication" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_no_page_shows_the_database_password(make_cluster: Callable[..., Cluster]) -> None:
    from starlette.testclient import TestClient

    from celery_durable import Durable
    from celery_durable.web import create_app

    cluster = make_cluster("redis", "postgres")
    secret = "s3cr3t-pw"  # trust auth: PostgreSQL accepts any password here
    app = create_proj_app(
        broker=cluster.broker,
        store=POSTGRES_URL.replace("postgres@", f"postgres:{secret}@"),
        prefix=cluster.prefix,
        queue=cluster.queue,
    )
    durable = Durable.of(app)
    job_id = durable.enqueue(app.tasks["proj.quick"], 1).id
    client = TestClient(
        create_app(durable), base_url="http://127.0.0.1:5556", client=("127.0.0.1", 50000)
    )
    pages = ["/jobs", f"/jobs/{job_id}", "/queues", "/schedules", "/dead-letters", "/events"]
    for page in [*pages, "/api/jobs", f"/api/jobs/{job_id}", "/api/queues"]:
        answer = client.get(page)
        assert answer.status_code == 200 and secret not in answer.text, page
    assert "postgres:***@" in client.get("/jobs").text
    durable.storage.dispose()  # type: ignore[attr-defined]
