"""Access: salted password hashes only, users from a file or the environment, and who counts as the annotator."""

import json
import stat
from types import SimpleNamespace

import pytest

from vital.annotate.auth import (
    USERS_ENV,
    add_user,
    allowed_annotators,
    hash_password,
    load_users,
    make_auth,
    on_space,
    resolve_annotator,
    verify_password,
)


def test_hashes_are_salted_and_verify():
    first, second = hash_password("s3cret"), hash_password("s3cret")
    assert first != second and "s3cret" not in first
    assert verify_password("s3cret", first) and verify_password("s3cret", second)
    assert not verify_password("S3cret", first)
    assert not verify_password("s3cret", "s3cret")  # a plain-text value is not a hash
    assert not verify_password("s3cret", "scrypt$x$y$z$00$00")
    with pytest.raises(ValueError):
        hash_password("")


def test_users_from_a_file_or_the_environment(tmp_path):
    path = tmp_path / "users.json"
    add_user(path, "alice", "pw-a")
    add_user(path, "bob", "pw-b")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    users = load_users(path)
    assert sorted(users) == ["alice", "bob"] and verify_password("pw-b", users["bob"])
    assert load_users(environ={USERS_ENV: path.read_text()}) == users
    assert load_users(environ={}) == {}

    check = make_auth(users)
    assert check("alice", "pw-a") and not check("alice", "pw-b") and not check("mallory", "pw-a")


def test_plain_passwords_and_unsafe_names_are_refused(tmp_path):
    path = tmp_path / "users.json"
    path.write_text(json.dumps({"alice": "hunter2"}))
    with pytest.raises(ValueError, match="not a scrypt hash"):
        load_users(path)
    path.write_text(json.dumps({"../alice": hash_password("x")}))
    with pytest.raises(ValueError, match="username"):
        load_users(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected an object"):
        load_users(path)
    with pytest.raises(ValueError):
        add_user(tmp_path / "u.json", "a b", "pw")


def test_who_is_the_annotator():
    assert resolve_annotator(SimpleNamespace(username="alice")) == "alice"
    assert resolve_annotator(SimpleNamespace(username=None)) is None
    assert resolve_annotator(None) is None
    # On a Space the Hugging Face profile counts, not the request's username.
    profile = SimpleNamespace(username="dr-who")
    assert resolve_annotator(SimpleNamespace(username=None), profile, space=True) == "dr-who"
    assert resolve_annotator(SimpleNamespace(username="alice"), None, space=True) is None
    assert resolve_annotator(None, profile, space=True, allowed={"dr-house"}) is None
    assert resolve_annotator(None, profile, space=True, allowed={"dr-who"}) == "dr-who"
    assert on_space({"SPACE_ID": "org/annotate"}) and not on_space({})
    assert allowed_annotators({"VITAL_ANNOTATORS": " dr-who, dr-house ,"}) == {"dr-who", "dr-house"}
    assert allowed_annotators({}) is None
