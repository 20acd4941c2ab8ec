"""The dashboard over HTTP, in-process on the memory store: authentication, CSRF, read-only
mode, escaping, bad input, bulk actions and the JSON API. The browser tests against real
workers are in tests/integration/test_web_dashboard.py."""

from __future__ import annotations

import base64
import importlib
import logging
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import HTTPConnection
from starlette.testclient import TestClient

from celery_durable.errors import ConfigurationError
from celery_durable.settings import Settings
from celery_durable.store.records import JobState
from celery_durable.web import Operator, create_app
from celery_durable.web.actions import ACTIONS
from celery_durable.web.chart import minutes, rates, svg
from celery_durable.web.security import check_bind
from tests.unit.conftest import Env, make_env

LOCAL = ("127.0.0.1", 50000)


@pytest.fixture
def web_env() -> Iterator[Env]:
    env = make_env(call_retries=0, job_retries=0)

    @env.durable.task(name="web.echo", shared=False)
    def echo(value: Any) -> Any:
        return value

    @env.durable.task(name="web.other", shared=False)
    def other() -> None:
        return None

    yield env


def _client(env: Env, client: tuple[str, int] = LOCAL, **options: Any) -> TestClient:
    base = "http://127.0.0.1:5556"  # a loopback client asks for a loopback name
    return TestClient(create_app(env.durable, **options), base_url=base, client=client)


def _token(client: TestClient) -> str:
    token: str = client.get("/api/csrf").json()["token"]
    return token


def _act(client: TestClient, action: str, /, **fields: Any) -> Any:
    return client.post(
        f"/api/actions/{action}", json=fields, headers={"X-CSRF-Token": _token(client)}
    )


def _state(env: Env, job_id: str) -> JobState:
    job = env.storage.get_job(job_id)
    assert job is not None
    return job.state


def test_an_action_without_a_valid_csrf_token_is_refused_and_changes_nothing(
    web_env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = web_env.durable.enqueue(web_env.app.tasks["web.echo"], 1).id
    client = _client(web_env)
    client.get("/jobs")  # the cookie with the nonce
    assert client.post("/api/actions/cancel", json={"job_id": job_id}).status_code == 403
    forged = {"X-CSRF-Token": "0" * 64}
    assert (
        client.post("/api/actions/cancel", json={"job_id": job_id}, headers=forged).status_code
        == 403
    )
    # a form posted from another site carries neither the cookie nor the token
    stranger = _client(web_env)
    refused = stranger.post(
        "/actions/cancel", data={"job_id": job_id, "csrf_token": _token(client)}
    )
    assert refused.status_code == 403 and "CSRF" in refused.text
    assert _state(web_env, job_id) is JobState.PENDING
    with caplog.at_level(logging.INFO, logger="celery_durable.web.audit"):
        done = _act(client, "cancel", job_id=job_id)
    assert done.status_code == 200 and done.json()["ids"] == [job_id]
    assert _state(web_env, job_id) is JobState.CANCELLED
    assert f"cancel by anonymous@127.0.0.1: job {job_id}: cancelled; jobs={job_id}" in caplog.text


def test_a_form_post_with_the_pages_token_acts_and_reports(web_env: Env) -> None:
    job_id = web_env.durable.enqueue(web_env.app.tasks["web.echo"], 1).id
    client = _client(web_env)
    page = client.get(f"/jobs/{job_id}").text
    token = page.split('"X-CSRF-Token": "')[1].split('"')[0]
    answer = client.post(
        "/actions/cancel",
        data={"job_id": job_id},
        headers={"X-CSRF-Token": token, "HX-Request": "true"},
    )
    assert answer.status_code == 200 and answer.headers["HX-Trigger"] == "refresh"
    assert f"job {job_id}: cancelled" in answer.text
    assert _state(web_env, job_id) is JobState.CANCELLED


@pytest.mark.parametrize("how", ["argument", "setting"])
def test_read_only_refuses_every_action_and_shows_no_buttons(web_env: Env, how: str) -> None:
    if how == "setting":
        web_env.durable.settings = Settings(web_read_only=True)
        client = _client(web_env)
    else:
        client = _client(web_env, read_only=True)
    job_id = web_env.durable.enqueue(web_env.app.tasks["web.echo"], 1).id
    for name in ACTIONS:
        answer = _act(
            client, name, job_id=job_id, name="x", kind="queue", action="cancel", ids=[job_id]
        )
        assert answer.status_code == 403, name
        assert "read-only" in answer.json()["error"]
    assert _state(web_env, job_id) is JobState.PENDING
    for page in ("/jobs", f"/jobs/{job_id}", "/dead-letters", "/schedules", "/queues"):
        html = client.get(page).text
        assert "hx-post" not in html and "read-only" in html, page


def test_without_credentials_only_loopback_clients_get_in(web_env: Env) -> None:
    assert _client(web_env, client=("10.1.2.3", 40000)).get("/jobs").status_code == 401
    assert _client(web_env, client=("::1", 40000)).get("/jobs").status_code == 200
    # a page on a rebound DNS name reaches 127.0.0.1 but names its own host: refused
    rebound = _client(web_env).get("/api/csrf", headers={"host": "evil.example:5556"})
    assert rebound.status_code == 401 and "authentication required" in rebound.json()["error"]
    assert _client(web_env).get("/jobs", headers={"host": "localhost:5556"}).status_code == 200


def test_a_post_from_another_origin_is_refused_even_with_the_token(web_env: Env) -> None:
    job_id = web_env.durable.enqueue(web_env.app.tasks["web.echo"], 1).id
    client = _client(web_env)
    headers = {"X-CSRF-Token": _token(client), "Origin": "http://evil.example"}
    answer = client.post("/api/actions/cancel", json={"job_id": job_id}, headers=headers)
    assert answer.status_code == 403 and _state(web_env, job_id) is JobState.PENDING
    headers["Origin"] = "http://127.0.0.1:5556"
    assert (
        client.post("/api/actions/cancel", json={"job_id": job_id}, headers=headers).status_code
        == 200
    )


def test_basic_credentials_and_a_bearer_token(web_env: Env) -> None:
    web_env.durable.settings = Settings(web_username="ops", web_password="pw", web_token="tk")
    client = _client(web_env, client=("10.1.2.3", 40000))
    asked = client.get("/jobs")
    assert asked.status_code == 401 and asked.headers["WWW-Authenticate"].startswith("Basic")
    wrong = base64.b64encode(b"ops:nope").decode()
    assert client.get("/jobs", headers={"Authorization": f"Basic {wrong}"}).status_code == 401
    right = base64.b64encode(b"ops:pw").decode()
    page = client.get("/jobs", headers={"Authorization": f"Basic {right}"})
    assert page.status_code == 200 and ">ops<" in page.text.replace(" ", "")
    assert client.get("/api/jobs", headers={"Authorization": "Bearer tk"}).status_code == 200
    assert client.get("/api/jobs", headers={"Authorization": "Bearer tx"}).status_code == 401
    # credentials configured: a loopback client is asked for them too
    assert _client(web_env).get("/jobs").status_code == 401
    assert "pw" not in repr(web_env.durable.settings) and "tk" not in repr(web_env.durable.settings)


def test_a_host_auth_hook_decides_who_may_act(
    web_env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    def auth(conn: HTTPConnection) -> Operator | str | None:
        user = conn.headers.get("x-user")
        return None if user is None else Operator(user, can_act=False) if user == "viewer" else user

    job_id = web_env.durable.enqueue(web_env.app.tasks["web.echo"], 1).id
    client = _client(web_env, client=("10.1.2.3", 40000), auth=auth)
    assert client.get("/jobs").status_code == 401
    client.headers["x-user"] = "viewer"
    assert "hx-post" not in client.get(f"/jobs/{job_id}").text
    assert _act(client, "cancel", job_id=job_id).status_code == 403
    client.headers["x-user"] = "alice"
    with caplog.at_level(logging.INFO, logger="celery_durable.web.audit"):
        assert _act(client, "cancel", job_id=job_id).status_code == 200
    assert "cancel by alice" in caplog.text
    assert _state(web_env, job_id) is JobState.CANCELLED


def test_a_non_loopback_bind_needs_credentials() -> None:
    with pytest.raises(ConfigurationError, match=r"without authentication.*durable_web_password"):
        check_bind("0.0.0.0", Settings(), None)
    check_bind("127.0.0.1", Settings(), None)
    check_bind("::1", Settings(), None)
    check_bind("0.0.0.0", Settings(web_token="t"), None)
    with pytest.raises(ConfigurationError, match="go together"):
        Settings(web_username="ops").validate()


def test_html_in_arguments_and_errors_is_shown_escaped(web_env: Env) -> None:
    hostile = "<script>alert(1)</script>"
    job_id = web_env.durable.enqueue(web_env.app.tasks["web.echo"], hostile).id
    client = _client(web_env)
    for page in (f"/jobs/{job_id}", "/jobs", f"/jobs?q={job_id[:6]}"):
        html = client.get(page).text
        assert "<script>alert" not in html, page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get(f"/jobs/{job_id}").text
    assert "<script>alert" not in client.get(f"/jobs/{hostile}").text  # not found, escaped


def test_bad_input_gets_a_clear_error_and_changes_nothing(web_env: Env) -> None:
    job_id = web_env.durable.enqueue(web_env.app.tasks["web.echo"], 1).id
    client = _client(web_env)
    cases = [
        ("send", {"job_id": job_id, "topic": "t", "payload": "{nope"}, 400, "not JSON"),
        ("retry", {"job_id": job_id}, 409, "pending"),
        ("retry", {"job_id": "missing"}, 404, "missing"),
        ("retry", {}, 400, "'job_id' field is missing"),
        ("bulk", {"action": "cancel"}, 400, "no jobs selected"),
        ("requeue", {}, 400, "no dead letters selected"),
        ("bulk", {"action": "explode", "ids": [job_id]}, 400, "unknown bulk action"),
        ("pause", {"kind": "host", "name": "x"}, 400, "kind must be"),
        ("launch", {}, 404, "no action named 'launch'"),
    ]
    for name, fields, status, message in cases:
        answer = _act(client, name, **fields)
        assert (answer.status_code, message in answer.json()["error"]) == (status, True), name
    assert _state(web_env, job_id) is JobState.PENDING
    sent = _act(client, "send", job_id=job_id, topic="approval", payload='{"ok": true}', key="k1")
    assert sent.status_code == 200 and "sent to job" in sent.json()["message"]
    again = _act(client, "send", job_id=job_id, topic="approval", payload="1", key="k1")
    assert again.json()["message"] == "already sent (same key)"
    page = client.get("/jobs?state=bogus")
    assert page.status_code == 400 and "not a job state" in page.text
    assert client.get("/api/jobs?since=yesterday").json()["error"].startswith("since='yesterday'")
    assert client.get("/jobs?page=0").status_code == 400
    assert client.get("/live?since=garbage").status_code == 400


def test_a_bulk_action_on_every_job_the_filter_matches(web_env: Env) -> None:
    echo, other = web_env.app.tasks["web.echo"], web_env.app.tasks["web.other"]
    mine = [web_env.durable.enqueue(echo, n).id for n in range(3)]
    kept = web_env.durable.enqueue(other).id
    client = _client(web_env)
    answer = _act(client, "bulk", action="cancel", scope="filter", task="web.echo")
    assert answer.status_code == 200 and sorted(answer.json()["ids"]) == sorted(mine)
    assert [_state(web_env, j) for j in mine] == [JobState.CANCELLED] * 3
    assert _state(web_env, kept) is JobState.PENDING
    again = _act(client, "bulk", action="cancel", ids=[*mine[:1], "missing"])
    assert again.json()["ids"] == mine[:1] and list(again.json()["skipped"]) == ["missing"]


def test_the_json_api_lists_filters_counts_and_shows_a_job(web_env: Env) -> None:
    echo = web_env.app.tasks["web.echo"]
    ids = [web_env.durable.enqueue(echo, n).id for n in range(3)]
    web_env.deliver("web.echo", ids[0], 0)
    client = _client(web_env)
    listed = client.get("/api/jobs?state=pending").json()
    assert {j["id"] for j in listed["jobs"]} == set(ids[1:])
    assert listed["counts"]["succeeded"] == 1 and listed["counts"]["pending"] == 2
    assert [j["id"] for j in client.get(f"/api/jobs?q={ids[1][:8]}").json()["jobs"]] == [ids[1]]
    shown = client.get(f"/api/jobs/{ids[0]}").json()
    assert (shown["state"], shown["result"], shown["args"]) == ("succeeded", 0, [0])
    assert client.get(f"/api/jobs/{ids[0]}/history").json()["job"]["id"] == ids[0]
    assert client.get("/api/jobs/missing").status_code == 404
    queues = client.get("/api/queues").json()
    assert queues["queues"][0]["pending"] == 2
    assert len(queues["throughput"]["minutes"]) == 60


def test_pages_one_past_the_page_size_shows_a_next_page(web_env: Env) -> None:
    echo = web_env.app.tasks["web.echo"]
    for n in range(51):
        web_env.durable.enqueue(echo, n)
        web_env.clock.advance(1)
    client = _client(web_env)
    first = client.get("/api/jobs").json()
    assert (len(first["jobs"]), first["has_next"]) == (50, True)
    second = client.get("/api/jobs?page=2").json()
    assert (len(second["jobs"]), second["has_next"]) == (1, False)
    assert second["jobs"][0]["args"] == [0]  # newest first: the oldest is last


def test_the_chart_counts_each_minute_and_the_failure_rate() -> None:
    now = datetime(2026, 3, 1, 12, 5, 30, tzinfo=timezone.utc)
    at = now.replace(second=0)
    rows = [
        (at - timedelta(minutes=1), "succeeded", 90),
        (at - timedelta(minutes=1), "dead", 10),
        (at, "failed", 5),
        (at - timedelta(hours=2), "succeeded", 1000),  # outside the window
    ]
    series = minutes(rows, now, 60)
    assert len(series) == 60 and series[-1].at == at
    assert (series[-2].succeeded, series[-2].failed, series[-1].failed) == (90, 10, 5)
    computed = rates(series)
    assert computed.per_second == pytest.approx(100 / 60)
    assert computed.failure_rate == pytest.approx(15 / 105)
    drawn = svg(series)
    assert drawn.count('class="ok"') == 1 and drawn.count('class="bad"') == 2


def test_the_example_mounts_the_dashboard_under_a_prefix_behind_the_hosts_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DASHBOARD_DIR", str(tmp_path))
    sys.modules.pop("examples.dashboard.host", None)
    host = importlib.import_module("examples.dashboard.host")
    try:
        client = TestClient(host.app, base_url="http://localhost:8000", client=LOCAL)
        assert client.get("/").text.startswith("the host app")
        assert client.get("/ops/jobs").status_code == 401  # the host said no
        client.headers["x-user"] = "alice"
        page = client.get("/ops/jobs")
        assert page.status_code == 200
        assert 'href="/ops/static/style.css"' in page.text and 'href="/ops/queues"' in page.text
        assert client.get("/ops/static/htmx.min.js").status_code == 200
        job_id = host.durable.enqueue(host.durable.task(name="ex.t", shared=False)(_noop)).id
        token = client.get("/ops/api/csrf").json()["token"]
        cancelled = client.post(
            "/ops/api/actions/cancel", json={"job_id": job_id}, headers={"X-CSRF-Token": token}
        )
        assert cancelled.status_code == 200
        assert "Path=/ops" in client.get("/ops/jobs", headers={"cookie": ""}).headers["set-cookie"]
        client.headers["x-user"] = "viewer"
        assert client.post("/ops/api/actions/retry", json={"job_id": job_id}).status_code == 403
    finally:
        host.durable.storage.dispose()  # type: ignore[attr-defined]


def _noop() -> None:
    return None


def test_an_async_auth_hook_is_awaited_and_a_falsy_answer_refuses(web_env: Env) -> None:
    answers: dict[str, Any] = {"alice": "alice", "empty": "", "no": False}

    async def auth(conn: HTTPConnection) -> Any:
        return answers.get(conn.headers.get("x-user", ""))

    client = _client(web_env, client=("10.1.2.3", 40000), auth=auth)
    for user, status in (("alice", 200), ("empty", 401), ("no", 401), ("nobody", 401)):
        assert client.get("/api/jobs", headers={"x-user": user}).status_code == status, user


def test_ids_with_slashes_and_question_marks_get_working_links(web_env: Env) -> None:
    odd = "orders/42?x=1#f"
    web_env.durable.enqueue(web_env.app.tasks["web.echo"], 1, task_id=odd)
    client = _client(web_env)
    listing = client.get("/jobs").text
    assert 'href="/jobs/orders%2F42%3Fx%3D1%23f"' in listing
    shown = client.get("/jobs/orders%2F42%3Fx%3D1%23f")
    assert shown.status_code == 200 and "orders/42?x=1#f" in shown.text
    assert client.get("/api/jobs/orders%2F42%3Fx%3D1%23f/history").status_code == 200
    assert [j["id"] for j in client.get("/api/jobs?q=orders/4").json()["jobs"]] == [odd]


def test_purge_reports_only_what_it_deleted(web_env: Env) -> None:
    job_id = web_env.durable.enqueue(web_env.app.tasks["web.echo"], 1).id
    answer = _act(_client(web_env), "purge", ids=[job_id, "missing"])
    assert answer.json() == {
        "message": "deleted 0 dead letters for good",
        "ids": [],
        "skipped": {job_id: "not a dead letter", "missing": "not a dead letter"},
    }
    assert _state(web_env, job_id) is JobState.PENDING
