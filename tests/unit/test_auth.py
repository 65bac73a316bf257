"""The credentials directory: names, hashes, idempotency, modes, the ACL text, the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mqtt_metamanager.auth import (
    AuthDir,
    AuthError,
    AuthSettings,
    check_name,
    hash_password,
    render_acl,
    render_cloud_acl,
    verify_password,
)

SETTINGS = AuthSettings(prefix="kubeedge", local_modules=("edged", "devicetwin"))


@pytest.fixture
def auth(tmp_path: Path) -> AuthDir:
    return AuthDir(tmp_path / "auth", SETTINGS)


@pytest.mark.parametrize("name", ["", "Admin", "a/b", "a+b", "a#", "-a", "a-", "a b", "x" * 64])
def test_names_mosquitto_cannot_substitute_safely_are_refused(name: str) -> None:
    with pytest.raises(AuthError):
        check_name(name)


def test_hashes_are_mosquittos_pbkdf2_format() -> None:
    hashed = hash_password("secret", salt=b"\x00" * 12)
    kind, iterations, salt, digest = hashed.split("$")[1:]
    assert (kind, iterations, salt) == ("7", "101", "AAAAAAAAAAAAAAAA")
    assert len(digest) == 88  # 64 bytes, base64
    assert verify_password("secret", hashed)
    assert not verify_password("Secret", hashed)
    assert hash_password("secret") != hash_password("secret")  # a fresh salt each time


def test_init_creates_every_service_user_once(auth: AuthDir) -> None:
    created = auth.init()
    assert created == ["metamanager", "edgehub", "admin", "edged", "devicetwin"]
    passwords = {u: auth.password_path(u).read_text() for u in created}
    hashes = auth.users()
    assert auth.init() == []
    assert {u: auth.password_path(u).read_text() for u in created} == passwords
    assert auth.users() == hashes
    for user, hashed in hashes.items():
        assert verify_password(passwords[user].strip(), hashed)
        assert auth.password_path(user).stat().st_mode & 0o777 == 0o600
    assert auth.passwd_path.stat().st_mode & 0o777 == 0o644
    assert auth.acl_path.stat().st_mode & 0o777 == 0o644


def test_a_password_set_by_hand_and_other_users_lines_are_kept(auth: AuthDir) -> None:
    auth.init()
    auth.password_path("edged").unlink()  # set with mosquitto_passwd, never written here
    hand = hash_password("chosen")
    text = auth.passwd_path.read_text().replace(auth.users()["edged"], hand)
    auth.passwd_path.write_text(text + f"someone:{hash_password('x')}\n")
    auth.init()
    assert auth.users()["edged"] == hand
    assert "someone" in auth.users()


def test_a_new_password_file_replaces_the_hash(auth: AuthDir) -> None:
    auth.init()
    auth.password_path("admin").write_text("rotated\n")
    auth.init()
    assert verify_password("rotated", auth.users()["admin"])


def test_add_and_remove_one_user(auth: AuthDir) -> None:
    auth.init()
    assert auth.add("tool") is True
    assert auth.add("tool") is False
    assert "tool" in auth.users() and auth.password_path("tool").exists()
    assert "user tool" not in auth.acl_path.read_text()  # the patterns cover a tool
    assert auth.add("alice", operator=True) is True
    assert "user alice\ntopic read kubeedge/#" in auth.acl_path.read_text()
    assert auth.remove("alice") is True
    assert "alice" not in auth.users() and not auth.password_path("alice").exists()
    assert "user alice" not in auth.acl_path.read_text()
    assert auth.remove("alice") is False
    with pytest.raises(AuthError):
        auth.add("Bad/Name")


def test_the_acl_gives_each_user_its_own_inbox_and_replies() -> None:
    acl = render_acl(SETTINGS).splitlines()
    assert "pattern write kubeedge/metamanager/in/%u" in acl
    assert "pattern readwrite kubeedge/reply/%u/#" in acl
    # Nobody may write the legacy inbox; metamanager reads it (served only when configured).
    assert not [line for line in acl if line.endswith("write kubeedge/metamanager/in")]
    assert acl[acl.index("user devicetwin") + 1] == "topic read kubeedge/devicetwin/in"
    assert "topic write kubeedge/devicetwin/in" in acl


def test_the_cloud_acl_confines_each_node_to_its_topics() -> None:
    assert render_cloud_acl("p").splitlines()[1:] == [
        "pattern read p/nodes/%u/down",
        "pattern write p/nodes/%u/up",
        "",
        "user cloudcore",
        "topic readwrite p/nodes/#",
    ]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mqtt_metamanager", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def test_the_auth_command(tmp_path: Path) -> None:
    done = cli("auth", "init", "--dir", "creds", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "creds" / "metamanager.password").exists()
    assert cli("auth", "add", "tool", "--dir", "creds", cwd=tmp_path).returncode == 0
    assert cli("auth", "add", "No", "--dir", "creds", cwd=tmp_path).returncode == 2
    assert cli("auth", "remove", "tool", "--dir", "creds", cwd=tmp_path).returncode == 0
    acl = cli("auth", "cloud-acl", "--prefix", "kube", cwd=tmp_path)
    assert acl.returncode == 0 and "pattern read kube/nodes/%u/down" in acl.stdout
