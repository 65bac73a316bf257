"""The docker tier: a Docker engine, the images the stack runs on, and the service's image.

Without an engine (or without the images) every test here skips with one reason; with
``REQUIRE_DOCKER=1`` (CI) that skip is a failure instead. Images come from the same
variables as docker-compose.yml (environment first, then the project's ``.env`` that
scripts/airgap-images.sh writes, then the public defaults), so the tier runs offline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from mqtt_metamanager.auth import AuthDir, AuthSettings

# testcontainers reads these when it is first imported (by the test modules, after this
# file): no Ryuk (its image cannot be pulled here), and containers reached through their
# ports published on the Docker host's 127.0.0.1.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
os.environ.setdefault("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")

ROOT = Path(__file__).resolve().parents[2]
SERVICE_IMAGE = "mqtt-metamanager:pytest"
DEFAULTS = {
    "MOSQUITTO_IMAGE": "eclipse-mosquitto:2",
    "PYTHON_BASE_IMAGE": "python:3.11-slim",
}


def unavailable(reason: str) -> NoReturn:
    """Skip the tier, or fail it when the run demands Docker (``REQUIRE_DOCKER=1``)."""
    if os.environ.get("REQUIRE_DOCKER") == "1":
        pytest.fail(f"REQUIRE_DOCKER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def compose_variable(name: str) -> str:
    """A variable as docker compose resolves it: environment, then .env, then the default."""
    if os.environ.get(name):
        return os.environ[name]
    env_file = ROOT / ".env"
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and key == name and value:
                return value.strip().strip("'\"")
    return DEFAULTS[name]


def _ensure_image(client: Any, image: str) -> None:
    import docker.errors

    try:
        client.images.get(image)
        return
    except docker.errors.ImageNotFound:
        pass
    try:
        client.images.pull(image)
    except docker.errors.APIError as exc:
        unavailable(
            f"image {image} is not here and cannot be pulled ({exc.explanation}): "
            "run scripts/airgap-images.sh"
        )


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    try:
        import docker
        import docker.errors
    except ImportError:
        unavailable("the docker Python package is missing: pip install -e '.[test]'")
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except docker.errors.DockerException:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        unavailable(f"no Docker engine answers at {where} (scripts/ci-docker.sh starts one)")
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _docker_engine(docker_client: Any) -> None:
    """Every test in this tier needs the engine, whether or not it asks for the client."""


@pytest.fixture(scope="session")
def mosquitto_image(docker_client: Any) -> str:
    image = compose_variable("MOSQUITTO_IMAGE")
    _ensure_image(docker_client, image)
    return image


@pytest.fixture(scope="session")
def service_image(docker_client: Any) -> str:
    """The service's image, built from this tree on the configured base (legacy builder)."""
    import docker.errors

    base = compose_variable("PYTHON_BASE_IMAGE")
    _ensure_image(docker_client, base)
    try:
        docker_client.images.build(
            path=str(ROOT),
            tag=SERVICE_IMAGE,
            buildargs={"BASE_IMAGE": base},
            rm=True,
            forcerm=True,
        )
    except docker.errors.BuildError as exc:
        log = "".join(str(chunk.get("stream", chunk)) for chunk in exc.build_log)
        pytest.fail(f"building the service image failed: {exc}\n{log[-3000:]}", pytrace=False)
    return SERVICE_IMAGE


@pytest.fixture(scope="session")
def compose_command(docker_client: Any) -> list[str]:
    """``docker compose`` (the plugin), checked to answer."""
    docker = shutil.which("docker")
    if docker is None:
        unavailable("the docker command line is not installed")
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=30, check=False
    )
    if probe.returncode != 0:
        unavailable("the docker compose plugin is missing: see scripts/ci-docker.sh")
    return [docker, "compose"]


@pytest.fixture(scope="session")
def mosquitto_pub() -> str:
    found = shutil.which("mosquitto_pub")
    if found is None:
        unavailable("mosquitto_pub is not installed (apt-get install mosquitto-clients)")
    return found


@pytest.fixture
def auth_dir(tmp_path: Path) -> AuthDir:
    """Credentials as `mqtt-metamanager auth init` writes them, for the project's broker
    config (it loads /mosquitto/auth/passwd and /mosquitto/auth/acl)."""
    auth = AuthDir(tmp_path / "auth", AuthSettings())
    auth.init()
    return auth


def login_of(auth: AuthDir, user: str) -> tuple[str, str]:
    return user, auth.password_path(user).read_text().strip()
