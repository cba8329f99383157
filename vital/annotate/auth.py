"""Who may annotate: hashed passwords for a local server, Hugging Face OAuth on a Space.

Locally the app runs behind Gradio's login form. Users come from a JSON file (``--users users.json``) or the
``VITAL_ANNOTATE_USERS`` environment variable holding the same JSON (handy for a container secret)::

    {"alice": "scrypt$16384$8$1$<salt hex>$<hash hex>",
     "lead": {"password": "scrypt$...", "roles": ["annotator", "campaign"]}}

Passwords are never stored: only a salted scrypt hash (``hashlib.scrypt``, no extra dependency), compared in constant
time. Add a user with ``vital annotate --add_user alice --users users.json`` (it asks for the password; ``--roles
annotator,campaign`` for whoever runs the campaign). A plain hash means the ``annotator`` role; the ``campaign`` role
opens the campaign view (progress, agreement, adjudication, export of the adjudicated set).

The login form is guarded (`RequestGuard`): after `MAX_FAILURES_PER_USER` failed sign-ins for one username, or
`MAX_FAILURES_PER_ADDRESS` from one address, within `FAILURE_WINDOW_S`, further attempts are refused for `LOCKOUT_S`
(HTTP 429), the right password included; every request body over `MAX_REQUEST_BYTES` is refused (HTTP 413) before
it reaches a handler. Behind a reverse proxy every client shares the proxy's address: the per-user limit still holds.
Gradio's ``/logout`` ends the session on the server (the session tokens are forgotten, not just the cookie).

On a Space (``SPACE_ID`` is set) annotators sign in with their Hugging Face account (``gr.LoginButton``, the Space's
``hf_oauth: true``); ``VITAL_ANNOTATORS`` (comma-separated Hugging Face usernames) restricts who may write.

Whatever the mode, `resolve_annotator` returns None for a visitor who is not signed in, and the task refuses to save
an annotation without an annotator (`vital.annotate.store.AnonymousWriteError`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from vital.annotate.store import ANNOTATOR_RE


logger = logging.getLogger(__name__)

USERS_ENV = "VITAL_ANNOTATE_USERS"
ANNOTATORS_ENV = "VITAL_ANNOTATORS"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
ROLES = ("annotator", "campaign")
MAX_FAILURES_PER_USER = 5
MAX_FAILURES_PER_ADDRESS = 20
FAILURE_WINDOW_S = 15 * 60
LOCKOUT_S = 15 * 60
MAX_REQUEST_BYTES = 512 * 1024  # the largest legitimate request (a conversation of 8 long turns) is under 300 kB
MAX_PASSWORD_CHARS = 1024


def hash_password(password: str, salt: bytes | None = None) -> str:
    """A salted scrypt hash: ``scrypt$n$r$p$<salt hex>$<hash hex>``."""
    if not password:
        raise ValueError("empty password")
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a `hash_password` hash (constant-time comparison; False for a malformed hash)."""
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(
            (password or "").encode("utf-8"),
            salt=bytes.fromhex(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected) // 2,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest.hex(), expected)


def load_users(path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{username: password hash}`` from ``path``, else from ``$VITAL_ANNOTATE_USERS``; {} when neither is set.

    Raises:
        ValueError: a malformed file, a username that cannot name an annotator file, or a value that is not a hash
            (a plain-text password is refused rather than silently accepted).
    """
    return {name: entry[0] for name, entry in _read_users(path, environ).items()}


def load_roles(path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> dict[str, set[str]]:
    """``{username: roles}`` from the same source as `load_users` (a plain hash: ``{"annotator"}``)."""
    return {name: entry[1] for name, entry in _read_users(path, environ).items()}


def _read_users(path: str | os.PathLike | None, environ: Mapping[str, str] | None) -> dict[str, tuple[str, set[str]]]:
    environ = os.environ if environ is None else environ
    if path is not None:
        text, where = Path(path).read_text(encoding="utf-8"), str(path)
    elif environ.get(USERS_ENV):
        text, where = environ[USERS_ENV], f"${USERS_ENV}"
    else:
        return {}
    try:
        users = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not JSON ({error})") from error
    if not isinstance(users, dict):
        raise ValueError(f"{where}: expected an object {{username: password hash}}")
    out = {}
    for name, entry in users.items():
        if not ANNOTATOR_RE.match(name):
            raise ValueError(f"{where}: username {name!r} must match {ANNOTATOR_RE.pattern}")
        stored, roles = (entry.get("password"), entry.get("roles")) if isinstance(entry, dict) else (entry, None)
        if not isinstance(stored, str) or not stored.startswith("scrypt$") or stored.count("$") != 5:
            raise ValueError(f"{where}: the password of {name!r} is not a scrypt hash; add users with --add_user")
        roles = set(roles or ["annotator"])
        if not roles <= set(ROLES):
            raise ValueError(f"{where}: unknown role(s) {sorted(roles - set(ROLES))} for {name!r} (known: {ROLES})")
        out[name] = (stored, roles)
    return out


def add_user(path: str | os.PathLike, username: str, password: str, roles: Iterable[str] = ("annotator",)) -> None:
    """Add (or replace) a user in a users file, written atomically with owner-only permissions.

    ``roles``: ``annotator`` (annotate) and/or ``campaign`` (the campaign view)."""
    if not ANNOTATOR_RE.match(username):
        raise ValueError(f"username {username!r} must match {ANNOTATOR_RE.pattern}")
    roles = sorted(set(roles))
    if not roles or not set(roles) <= set(ROLES):
        raise ValueError(f"roles must be among {ROLES}, got {roles}")
    if len(password or "") > MAX_PASSWORD_CHARS:
        raise ValueError(f"the password is over {MAX_PASSWORD_CHARS} characters")
    path = Path(path)
    users: dict[str, Any] = {}
    for name, (stored, have) in (_read_users(path, None) if path.exists() else {}).items():
        users[name] = stored if have == {"annotator"} else {"password": stored, "roles": sorted(have)}
    stored = hash_password(password)
    users[username] = stored if roles == ["annotator"] else {"password": stored, "roles": roles}
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(users, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def make_auth(users: Mapping[str, str]) -> Callable[[str, str], bool]:
    """The ``auth`` callable for ``Blocks.launch``: checks a username and password against the hashes."""
    users = dict(users)

    def check(username: str, password: str) -> bool:
        if len(password or "") > MAX_PASSWORD_CHARS:  # scrypt over megabytes would be a cheap denial of service
            return False
        stored = users.get(username)
        if stored is None:
            verify_password(password, hash_password("timing-equaliser", b"\0" * 16))  # same work for unknown users
            return False
        ok = verify_password(password, stored)
        if not ok:
            logger.warning("failed login for %r", username)
        return ok

    return check


def on_space(environ: Mapping[str, str] | None = None) -> bool:
    """True on a Hugging Face Space (``SPACE_ID`` is set): sign-in is Hugging Face OAuth."""
    return bool((os.environ if environ is None else environ).get("SPACE_ID"))


def allowed_annotators(environ: Mapping[str, str] | None = None) -> set[str] | None:
    """The Hugging Face usernames allowed to write on a Space (``$VITAL_ANNOTATORS``), or None for any signed-in user."""
    value = (os.environ if environ is None else environ).get(ANNOTATORS_ENV, "")
    names = {n.strip() for n in value.split(",") if n.strip()}
    return names or None


def resolve_annotator(
    request: Any = None, profile: Any = None, space: bool = False, allowed: set[str] | None = None
) -> str | None:
    """The signed-in annotator of a request, or None.

    Args:
        request: the `gradio.Request` (its ``username`` is set by the local login form).
        profile: the `gradio.OAuthProfile` on a Space (None when signed out).
        space: take the user from ``profile`` (a Space) instead of ``request``.
        allowed: if given, only these users count as annotators.
    """
    if space:
        name = getattr(profile, "username", None)
        if name is None and isinstance(profile, Mapping):  # the raw OAuth userinfo
            name = profile.get("preferred_username")
    else:
        name = getattr(request, "username", None)
    if not name:
        return None
    if allowed is not None and name not in allowed:
        logger.warning("user %r is signed in but not among the allowed annotators", name)
        return None
    return str(name)


class LoginThrottle:
    """Failed sign-ins counted per key (``user:<name>``, ``address:<ip>``) in a sliding window; a key with too many is
    locked out for a while (thread-safe; ``clock`` for tests)."""

    def __init__(
        self,
        max_per_user: int = MAX_FAILURES_PER_USER,
        max_per_address: int = MAX_FAILURES_PER_ADDRESS,
        window_s: float = FAILURE_WINDOW_S,
        lockout_s: float = LOCKOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.limits = {"user": max_per_user, "address": max_per_address}
        self.window_s, self.lockout_s, self.clock = window_s, lockout_s, clock
        self._failures: dict[str, deque] = defaultdict(deque)
        self._locked_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def locked_for(self, key: str) -> float:
        """Seconds until ``key`` may try again (0: not locked)."""
        with self._lock:
            return max(0.0, self._locked_until.get(key, 0.0) - self.clock())

    def failure(self, key: str) -> None:
        now = self.clock()
        with self._lock:
            failures = self._failures[key]
            failures.append(now)
            while failures and failures[0] < now - self.window_s:
                failures.popleft()
            if len(failures) >= self.limits[key.split(":", 1)[0]]:
                self._locked_until[key] = now + self.lockout_s
                failures.clear()
                logger.warning("sign-in locked for %s after repeated failures", key)

    def success(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


class RequestGuard:
    """ASGI middleware in front of the app: refuses request bodies over ``max_bytes`` (413) and sign-ins from a locked
    user or address (429), and counts failed sign-ins (the login route's 400) in ``throttle``."""

    def __init__(self, app, throttle: LoginThrottle | None = None, max_bytes: int = MAX_REQUEST_BYTES):
        self.app = app
        self.throttle = throttle or LoginThrottle()
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await _reply(send, 413, f"Request too large: the limit is {self.max_bytes // 1024} kB.")
        body, more = b"", scope["method"] in ("POST", "PUT", "PATCH")
        while more:  # read the whole body (small by construction) so that its size is known before the app runs
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await _reply(send, 413, f"Request too large: the limit is {self.max_bytes // 1024} kB.")
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        if not (scope["method"] == "POST" and scope["path"].rstrip("/").endswith("/login")):
            return await self.app(scope, replay, send)
        address = f"address:{(scope.get('client') or ('unknown',))[0]}"
        username = await _form_username(scope, body)
        user = f"user:{username}"
        wait = max(self.throttle.locked_for(address), self.throttle.locked_for(user) if username else 0.0)
        if wait > 0:
            minutes = max(1, round(wait / 60))
            return await _reply(send, 429, f"Too many failed sign-ins: try again in about {minutes} minute(s).")
        status = {}

        async def watch(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope, replay, watch)
        if status.get("code") == 400:
            self.throttle.failure(address)
            if username:
                self.throttle.failure(user)
        elif status.get("code") == 200 and username:
            self.throttle.success(user)


async def _form_username(scope, body: bytes) -> str:
    """The ``username`` field of a sign-in form, urlencoded or multipart (Gradio's login page sends multipart)."""
    from starlette.requests import Request

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(scope, receive).form()
        value = form.get("username")
        await form.close()
    except Exception:  # a malformed form: the login route refuses it anyway
        return ""
    return value.strip() if isinstance(value, str) else ""


async def _reply(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
