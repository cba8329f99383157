"""Who may annotate: hashed passwords for a local server, Hugging Face OAuth on a Space.

Locally the app runs behind Gradio's login form. Users come from a JSON file (``--users users.json``) or the
``VITAL_ANNOTATE_USERS`` environment variable holding the same JSON (handy for a container secret)::

    {"alice": "scrypt$16384$8$1$<salt hex>$<hash hex>", "bob": "scrypt$..."}

Passwords are never stored: only a salted scrypt hash (``hashlib.scrypt``, no extra dependency), compared in constant
time. Add a user with ``vital annotate --add_user alice --users users.json`` (it asks for the password).

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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from vital.annotate.store import ANNOTATOR_RE


logger = logging.getLogger(__name__)

USERS_ENV = "VITAL_ANNOTATE_USERS"
ANNOTATORS_ENV = "VITAL_ANNOTATORS"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


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
    for name, stored in users.items():
        if not ANNOTATOR_RE.match(name):
            raise ValueError(f"{where}: username {name!r} must match {ANNOTATOR_RE.pattern}")
        if not isinstance(stored, str) or not stored.startswith("scrypt$") or stored.count("$") != 5:
            raise ValueError(f"{where}: the password of {name!r} is not a scrypt hash; add users with --add_user")
    return dict(users)


def add_user(path: str | os.PathLike, username: str, password: str) -> None:
    """Add (or replace) a user in a users file, written atomically with owner-only permissions."""
    if not ANNOTATOR_RE.match(username):
        raise ValueError(f"username {username!r} must match {ANNOTATOR_RE.pattern}")
    path = Path(path)
    users = load_users(path) if path.exists() else {}
    users[username] = hash_password(password)
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
