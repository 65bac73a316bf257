#!/usr/bin/env bash
# The README's test command: make the venv, install what is missing, run every check.
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v mosquitto >/dev/null 2>&1 || ! command -v mosquitto_pub >/dev/null 2>&1 \
   || ! command -v openssl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    # openssl: the cloud-link tests make their own CA and certificates.
    echo "== installing the Debian mosquitto and openssl packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients openssl >/dev/null
    # The package starts a system broker on 1883; the tests start their own.
    systemctl disable --now mosquitto >/dev/null 2>&1 || service mosquitto stop >/dev/null 2>&1 || true
  else
    echo "mosquitto is missing: apt-get install mosquitto mosquitto-clients (as root)" >&2
  fi
fi
if ! command -v prometheus >/dev/null 2>&1 && [ ! -x /usr/bin/prometheus ]; then
  if [ "$(id -u)" = 0 ]; then
    # tests/integration/test_prometheus.py: a real Prometheus scrapes the service.
    echo "== installing the Debian prometheus package"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    # The package may start a system Prometheus on 9090; the test starts its own.
    systemctl disable --now prometheus >/dev/null 2>&1 || service prometheus stop >/dev/null 2>&1 || true
  else
    echo "prometheus is missing: apt-get install prometheus (as root)" >&2
  fi
fi
# mosquitto lives in /usr/sbin, which a non-login shell may not have on PATH.
export PATH="$PATH:/usr/sbin"

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  python3 -m venv .venv
fi
if ! command -v kubectl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    # tests/integration/test_kube_clients.py: kubectl against the Kubernetes read API.
    echo "== installing the Debian kubernetes-client package (kubectl)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
  else
    echo "kubectl is missing: apt-get install kubernetes-client (as root)" >&2
  fi
fi

if ! .venv/bin/python -c "import mqtt_metamanager, prometheus_client, pytest, hypothesis, testcontainers, kubernetes" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ]; then
  echo "== installing the package and its test dependencies"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  touch .venv/.installed
fi

echo "== ruff"
.venv/bin/ruff check mqtt_metamanager tests
.venv/bin/ruff format --check mqtt_metamanager tests
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
exec .venv/bin/pytest "$@"
