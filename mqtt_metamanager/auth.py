"""Broker credentials (SPEC §11): the users of the local broker, Mosquitto's hashed password
file, the ACL that lets each user write only its own inbox, and one plain password file per
user for that user's client.

``AuthDir`` owns one directory::

    passwd             user:$7$... lines (Mosquitto's password file; other lines are kept)
    acl                the ACL for the topic prefix (``render_acl``)
    <user>.password    the plain password, mode 0600
    operators          users added with ``add(..., operator=True)``, one per line

Every change writes whole files atomically (temporary file, then rename), so a broker that
reloads (SIGHUP) never reads half of one. Existing passwords are always kept.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import secrets
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .config import USERNAME, Config
from .routing import EDGED, EDGEHUB, METAMANAGER, Topics

log = logging.getLogger(__name__)

# mosquitto_passwd 2.x: PBKDF2-HMAC-SHA512, 12 bytes of salt, its default iteration count.
# The generated passwords carry 192 random bits, so stretching adds nothing to them.
HASH_ID = "7"
HASH_ITERATIONS = 101
SALT_BYTES = 12
PASSWORD_BYTES = 24
# The broker drops privileges to its own user, which must read these two.
BROKER_READABLE = 0o644
OWNER_ONLY = 0o600
DIR_MODE = 0o755


class AuthError(ValueError):
    """A name or a file that cannot be used; the message says which."""


def check_name(name: str) -> str:
    """``name`` if it is a user name Mosquitto can put in an ACL pattern as ``%u``."""
    if not USERNAME.fullmatch(name):
        raise AuthError(f"{name!r} is not a user name: {USERNAME.pattern}")
    return name


def hash_password(password: str, salt: bytes | None = None) -> str:
    """The ``$7$`` hash Mosquitto 2 checks a password against."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, HASH_ITERATIONS)
    b64 = base64.b64encode
    return f"${HASH_ID}${HASH_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches a ``$7$`` line of a Mosquitto password file."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != HASH_ID or not parts[2].isdigit():
        return False
    salt, expected = base64.b64decode(parts[3]), base64.b64decode(parts[4])
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]))
    return secrets.compare_digest(digest, expected)


@dataclass(frozen=True)
class AuthSettings:
    """What the ACL depends on, from the service's config."""

    prefix: str = "kubeedge"
    local_modules: tuple[str, ...] = (EDGED,)
    operators: tuple[str, ...] = ("admin",)
    bridge_state_topic: str = ""

    @classmethod
    def from_config(cls, config: Config) -> AuthSettings:
        modules = dict.fromkeys([EDGED, *config.modules.local])
        return cls(
            prefix=config.mqtt.topic_prefix,
            local_modules=tuple(modules),
            operators=tuple(config.security.operators),
            bridge_state_topic=config.cloud.bridge_state_topic,
        )

    def service_users(self) -> list[str]:
        """Everyone ``init`` creates: metamanager, edgehub, the operators, the modules."""
        return list(dict.fromkeys([METAMANAGER, EDGEHUB, *self.operators, *self.local_modules]))


def render_acl(settings: AuthSettings, extra_operators: Iterable[str] = ()) -> str:
    """The edge broker's ACL (docs/security.md explains each line)."""
    topics = Topics(settings.prefix)
    p = settings.prefix
    operators = list(dict.fromkeys([*settings.operators, *extra_operators]))
    bridge = settings.bridge_state_topic or f"{p}/{EDGEHUB}/bridge"
    lines = [
        f"# The ACL of the edge broker for prefix {p}: written by `mqtt-metamanager auth`;",
        "# edits are lost when it runs again. See docs/security.md.",
        "",
        "# Every user: its own inbox at metamanager, its own reply space, the public state.",
        f"pattern write {topics.metamanager_in}/%u",
        f"pattern readwrite {p}/reply/%u/#",
        f"pattern read {topics.status}",
        f"pattern read {topics.connection}",
    ]
    for module in settings.local_modules:
        lines += ["", f"user {module}", f"topic read {topics.inbox(module)}"]
    lines += [
        "",
        f"user {METAMANAGER}",
        f"topic read {topics.metamanager_in}/+",
        f"topic read {topics.metamanager_in}",
        f"topic read {topics.edgehub_connection}",
        f"topic read {bridge}",
        *(f"topic write {topics.inbox(m)}" for m in settings.local_modules),
        f"topic write {topics.cloud}",
        f"topic write {p}/reply/#",
        f"topic readwrite {topics.status}",
        f"topic write {topics.connection}",
        f"topic write {topics.deadletter}",
        f"topic write {topics.metrics}",
        "",
        "# The cloud's side on this box (the bridge itself bypasses this file).",
        f"user {EDGEHUB}",
        f"topic read {topics.cloud}",
        f"topic write {topics.edgehub_connection}",
    ]
    for operator in operators:
        lines += ["", f"user {operator}", f"topic read {p}/#", "topic read $SYS/#"]
    return "\n".join(lines) + "\n"


def render_cloud_acl(prefix: str, cloud_users: Iterable[str] = ("cloudcore",)) -> str:
    """The cloud broker's ACL: each node, logged in as its node name (for example the CN of
    its client certificate with ``use_identity_as_username``), reads its own down topic and
    writes its own up topic, and nothing else; ``cloud_users`` (KubeEdge's cloud side)
    reach every node's."""
    lines = [
        f"# The cloud broker's ACL: node <u> reaches only {prefix}/nodes/<u>/.",
        f"pattern read {prefix}/nodes/%u/down",
        f"pattern write {prefix}/nodes/%u/up",
    ]
    for user in cloud_users:
        lines += ["", f"user {check_name(user)}", f"topic readwrite {prefix}/nodes/#"]
    return "\n".join(lines) + "\n"


def _write_atomically(path: Path, text: str, mode: int) -> None:
    # A temporary name of its own (mkstemp creates it 0600), so two writers never share one.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class AuthDir:
    """The credentials directory; every method leaves passwd and acl consistent."""

    def __init__(self, path: str | os.PathLike[str], settings: AuthSettings) -> None:
        self.path = Path(path)
        self.settings = settings

    @property
    def passwd_path(self) -> Path:
        return self.path / "passwd"

    @property
    def acl_path(self) -> Path:
        return self.path / "acl"

    def password_path(self, user: str) -> Path:
        return self.path / f"{check_name(user)}.password"

    def init(self) -> list[str]:
        """Create what is missing for every service user; return the users created."""
        with self._locked():
            return self._change(self.settings.service_users(), add=True)

    def add(self, name: str, *, operator: bool = False) -> bool:
        """Add one user (kept as it is if present); True if it was created."""
        check_name(name)
        with self._locked():
            if operator:
                operators = self._extra_operators()
                if name not in operators:
                    self._write_operators([*operators, name])
            return bool(self._change([name], add=True))

    def remove(self, name: str) -> bool:
        """Remove one user's login and password file; True if it had one."""
        check_name(name)
        with self._locked():
            operators = self._extra_operators()
            if name in operators:
                self._write_operators([o for o in operators if o != name])
            return bool(self._change([name], add=False))

    def users(self) -> dict[str, str]:
        """The password file: user -> hash, in file order."""
        entries: dict[str, str] = {}
        if self.passwd_path.exists():
            for line in self.passwd_path.read_text().splitlines():
                user, sep, hashed = line.partition(":")
                if sep and user:
                    entries[user] = hashed
        return entries

    # -- internals ------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One change at a time: two `auth add` run together both read passwd, and without
        this the second rename would drop the first one's user."""
        self.path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(self.path / ".lock", os.O_WRONLY | os.O_CREAT, OWNER_ONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _change(self, names: list[str], *, add: bool) -> list[str]:
        entries = self.users()
        changed: list[str] = []
        for name in names:
            if add:
                hashed = self._ensure_password(name, entries.get(name))
                if name not in entries:
                    changed.append(name)
                entries[name] = hashed
            else:
                if entries.pop(name, None) is not None:
                    changed.append(name)
                self.password_path(name).unlink(missing_ok=True)
        text = "".join(f"{user}:{hashed}\n" for user, hashed in entries.items())
        _write_atomically(self.passwd_path, text, BROKER_READABLE)
        acl = render_acl(self.settings, self._extra_operators())
        _write_atomically(self.acl_path, acl, BROKER_READABLE)
        return changed

    def _ensure_password(self, name: str, hashed: str | None) -> str:
        """The hash to keep for ``name``: the present one when its password file matches it;
        a new one for the password file's password, or for a new random password."""
        path = self.password_path(name)
        password = path.read_text().strip() if path.exists() else ""
        if hashed and password and verify_password(password, hashed):
            return hashed
        if hashed and password:
            # The file is what the user's client logs in with: the broker follows it.
            log.warning("auth: %s does not match %s's hash in passwd; rehashed from it", path, name)
        if hashed and not password:
            # Someone set this password by hand (mosquitto_passwd): it stays theirs.
            return hashed
        if not password:
            password = secrets.token_urlsafe(PASSWORD_BYTES)
            _write_atomically(path, password + "\n", OWNER_ONLY)
            log.info("auth: new password for %s in %s", name, path)
        return hash_password(password)

    def _extra_operators(self) -> list[str]:
        path = self.path / "operators"
        if not path.exists():
            return []
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]

    def _write_operators(self, names: list[str]) -> None:
        text = "".join(f"{name}\n" for name in names)
        _write_atomically(self.path / "operators", text, BROKER_READABLE)
