"""The credentials directory: names, hashes, idempotency, modes, the ACL text, the CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
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
from mqtt_metamanager.config import from_mapping

SETTINGS = AuthSettings(prefix="kubeedge", local_modules=("edged", "devicetwin"))


@pytest.fixture
def auth(tmp_path: Path) -> AuthDir:
    return AuthDir(tmp_path / "auth", SETTINGS)


@pytest.mark.parametrize("name", ["", "Admin", "a/b", "a+b", "a#", "-a", "a-", "a b", "x" * 64])
def test_names_mosquitto_cannot_substitute_safely_are_refused(name: str) -> None:
    with pytest.raises(AuthError, match=f"^{re.escape(repr(name))} is not a user name"):
        check_name(name)


@pytest.mark.parametrize("name", ["a", "0", "edged", "tool-2", "x" * 63])
def test_names_of_letters_digits_and_inner_dashes_are_users(name: str) -> None:
    assert check_name(name) == name


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


def test_the_acl_for_a_config_is_the_designed_one(tmp_path: Path) -> None:
    config = from_mapping(
        {
            "mqtt": {"topic_prefix": "site"},
            "modules": {"local": ["devicetwin"]},
            "security": {"operators": ["ops"]},
            "cloud": {"bridge_state_topic": "$SYS/broker/connection/cloud/state"},
        },
        environ={},
    )
    auth = AuthDir(tmp_path, AuthSettings.from_config(config))
    auth.add("alice", operator=True)
    rules = [line for line in auth.acl_path.read_text().splitlines() if line[:1] not in "#"]
    assert rules == [
        "pattern write site/metamanager/in/%u",
        "pattern readwrite site/reply/%u/#",
        "pattern read site/metamanager/status",
        "pattern read site/metamanager/connection",
        *("user edged", "topic read site/edged/in"),  # edged is always a local module
        *("user devicetwin", "topic read site/devicetwin/in"),
        "user metamanager",
        "topic read site/metamanager/in/+",
        "topic read site/metamanager/in",
        "topic read site/edgehub/connection",
        "topic read $SYS/broker/connection/cloud/state",
        "topic write site/edged/in",
        "topic write site/devicetwin/in",
        "topic write site/edgehub/in",
        "topic write site/reply/#",
        "topic readwrite site/metamanager/status",
        "topic write site/metamanager/connection",
        "topic write site/metamanager/deadletter",
        "topic write site/metamanager/metrics",
        *("user edgehub", "topic read site/edgehub/in", "topic write site/edgehub/connection"),
        *("user ops", "topic read site/#", "topic read $SYS/#"),
        *("user alice", "topic read site/#", "topic read $SYS/#"),
    ]
    assert "topic read site/edgehub/bridge" in render_acl(AuthSettings(prefix="site"))


def test_modes_do_not_depend_on_the_umask(auth: AuthDir) -> None:
    old = os.umask(0o077)
    try:
        auth.init()
    finally:
        os.umask(old)
    assert auth.passwd_path.stat().st_mode & 0o777 == 0o644
    assert auth.acl_path.stat().st_mode & 0o777 == 0o644
    assert auth.password_path("admin").stat().st_mode & 0o777 == 0o600
    # Only the files themselves: no temporary file is left next to them.
    assert sorted(p.name for p in auth.path.iterdir() if p.name.startswith(".")) == [".lock"]


def test_changes_made_at_the_same_time_all_stay(auth: AuthDir) -> None:
    auth.init()
    names = [f"tool-{i}" for i in range(8)]
    threads = [threading.Thread(target=AuthDir(auth.path, SETTINGS).add, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert set(names) <= set(auth.users())
    for name in names:
        assert verify_password(auth.password_path(name).read_text().strip(), auth.users()[name])


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


def test_the_auth_command_follows_the_config_and_says_what_failed(tmp_path: Path) -> None:
    (tmp_path / "edge.yaml").write_text(
        "mqtt: {topic_prefix: site}\n"
        "modules: {local: [edged, camera]}\n"
        "security: {operators: [ops]}\n"
    )
    done = cli("auth", "init", "--dir", "creds", "-c", "edge.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    creds = tmp_path / "creds"
    users = {line.split(":")[0] for line in (creds / "passwd").read_text().splitlines()}
    assert users == {"metamanager", "edgehub", "ops", "edged", "camera"}
    assert "user camera\ntopic read site/camera/in\n" in (creds / "acl").read_text()

    bad = cli("auth", "add", "Bad/Name", "--dir", "creds", cwd=tmp_path)
    assert bad.returncode == 2 and "'Bad/Name' is not a user name" in bad.stderr
    (tmp_path / "edge-bad.yaml").write_text("modules: {local: [Cam]}\n")
    bad = cli("auth", "init", "--dir", "creds", "-c", "edge-bad.yaml", cwd=tmp_path)
    assert bad.returncode == 2 and "modules.local" in bad.stderr
    (tmp_path / "a-file").write_text("")
    failed = cli("auth", "init", "--dir", "a-file", cwd=tmp_path)
    assert failed.returncode == 1 and "a-file" in failed.stderr
    assert cli("auth", "--dir", "creds", cwd=tmp_path).returncode == 2  # no subcommand
