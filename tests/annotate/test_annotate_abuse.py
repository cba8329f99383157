"""Abuse, against the real server over HTTP: oversize requests refused before any handler (a 30 MB comment), sign-in
throttling per user and per address (the right password is refused while locked), logout ends the session on the
server, and API calls without a session are refused."""

import socket
from contextlib import contextmanager

import httpx
import pytest

from vital.annotate.auth import MAX_REQUEST_BYTES, LoginThrottle, hash_password


pytest.importorskip("gradio")

from vital.annotate.app import AnnotationApp  # noqa: E402


PASSWORDS = {"alice": "alice-pw-1", "bob": "bob-pw-2"}
USERS = {name: hash_password(pw) for name, pw in PASSWORDS.items()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(task, throttle=None):
    app = AnnotationApp(task)
    if throttle is not None:
        app.throttle = throttle
    port = _free_port()
    app.launch(USERS, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield app, client
    finally:
        app.blocks.close()


def login(client, user, password=None, multipart=False):
    fields = {"username": user, "password": password or PASSWORDS[user]}
    if not multipart:
        return client.post("/login", data=fields)
    # as Gradio's login page sends it (FormData): multipart/form-data
    boundary = "----vitalboundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
    body = ("".join(parts) + f"--{boundary}--\r\n").encode()
    return client.post("/login", content=body, headers={"content-type": f"multipart/form-data; boundary={boundary}"})


def test_oversize_requests_are_refused_and_nothing_is_stored(make_task, store):
    with serve(make_task("preference")) as (app, client):
        assert login(client, "alice").status_code == 200
        comment = "x" * (30 * 1024 * 1024)
        payload = {"data": [app.task.items.ids[0], "A", comment], "fn_index": 0, "session_hash": "s"}
        response = client.post("/gradio_api/queue/join", json=payload)
        assert response.status_code == 413 and "Request too large" in response.text
        # without a Content-Length (chunked): counted while read, refused all the same
        chunks = (b"x" * 65536 for _ in range(MAX_REQUEST_BYTES // 65536 + 2))
        response = client.post("/gradio_api/queue/join", content=chunks, headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert client.get("/gradio_api/login_check").status_code == 200  # the server still serves
    assert not store.root.exists() or not any(store.root.rglob("*.jsonl"))


@pytest.mark.parametrize("multipart", [False, True], ids=["urlencoded", "multipart"])
def test_sign_in_is_throttled_per_user(make_task, multipart):
    with serve(make_task("preference")) as (_, client):
        assert login(client, "alice", multipart=multipart).status_code == 200  # the form is read either way
        for _ in range(5):
            assert login(client, "alice", "wrong", multipart=multipart).status_code == 400
        locked = login(client, "alice", multipart=multipart)  # the right password, while locked
        assert locked.status_code == 429 and "Too many failed sign-ins" in locked.text
        assert "access-token" not in locked.headers.get("set-cookie", "")
        assert login(client, "bob", multipart=multipart).status_code == 200  # another user is not locked


def test_sign_in_is_throttled_per_address(make_task):
    throttle = LoginThrottle(max_per_user=1000, max_per_address=6)
    with serve(make_task("preference"), throttle) as (_, client):
        for i in range(6):  # a different name each time: the per-user limit never triggers
            assert login(client, f"guess{i}", "wrong").status_code == 400
        assert login(client, "bob").status_code == 429


def test_a_lockout_ends_and_a_success_clears_the_count():
    now = [0.0]
    throttle = LoginThrottle(max_per_user=3, window_s=60, lockout_s=300, clock=lambda: now[0])
    for _ in range(2):
        throttle.failure("user:alice")
    throttle.success("user:alice")
    throttle.failure("user:alice")
    assert throttle.locked_for("user:alice") == 0  # 1 failure since the success
    throttle.failure("user:alice")
    throttle.failure("user:alice")
    assert throttle.locked_for("user:alice") == 300
    now[0] = 301
    assert throttle.locked_for("user:alice") == 0
    now[0] = 1000  # failures outside the window do not add up
    throttle.failure("user:alice")
    now[0] = 1100
    throttle.failure("user:alice")
    throttle.failure("user:alice")
    assert throttle.locked_for("user:alice") == 0


def test_logout_ends_the_session_on_the_server(make_task):
    with serve(make_task("preference")) as (app, client):
        assert login(client, "alice").status_code == 200
        cookies = dict(client.cookies)
        assert client.get("/gradio_api/login_check").status_code == 200
        assert any(getattr(b, "elem_id", None) == "vital-logout" for b in app.blocks.blocks.values())
        client.get("/logout", follow_redirects=False)
        # the old cookie, replayed, no longer opens a session
        with httpx.Client(base_url=str(client.base_url), cookies=cookies) as replay:
            assert replay.get("/gradio_api/login_check").status_code == 401


def test_api_calls_without_a_session_are_refused(make_task, store):
    with serve(make_task("preference")) as (app, client):
        payload = {"data": [app.task.items.ids[0], "A", ""], "fn_index": 0, "session_hash": "s"}
        assert client.post("/gradio_api/queue/join", json=payload).status_code == 401
        assert client.get("/gradio_api/login_check").status_code == 401
        assert client.get("/config").status_code == 401
    assert not store.root.exists() or not any(store.root.rglob("*.jsonl"))
