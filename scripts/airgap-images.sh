#!/usr/bin/env bash
# Build, with no container registry, the two images that docker-compose.yml and the
# Dockerfile need, from Debian packages (debootstrap + docker import), then write .env so a
# plain `docker compose up` builds and runs offline:
#   PYTHON_BASE_IMAGE  python3 + venv + CA bundle     (the Dockerfile's BASE_IMAGE)
#   MOSQUITTO_IMAGE    mosquitto + clients, eclipse-mosquitto's layout
#                      (/mosquitto/config/mosquitto.conf, /mosquitto/data, user mosquitto)
# One debootstrap (minbase) is cached under .airgap/ and both images are made from it.
# Idempotent: an image whose recipe label matches this script is kept as it is.
#
# Usage: scripts/airgap-images.sh [--force]          (root; needs docker and debootstrap)
# Environment: AIRGAP_MIRROR (default http://deb.debian.org/debian),
#              AIRGAP_CACHE (default .airgap), AIRGAP_SUITE (default bookworm).
set -euo pipefail
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$SELF")/.."

SUITE=${AIRGAP_SUITE:-bookworm}
MIRROR=${AIRGAP_MIRROR:-http://deb.debian.org/debian}
CACHE=${AIRGAP_CACHE:-.airgap}
PYTHON_IMAGE=mqtt-metamanager/python-base:$SUITE
MOSQUITTO_IMAGE=mqtt-metamanager/mosquitto:$SUITE
PYTHON_PACKAGES="python3 python3-venv ca-certificates"
MOSQUITTO_PACKAGES="mosquitto mosquitto-clients coreutils ca-certificates"
# Site CAs (a TLS-inspecting proxy, a private PyPI mirror...) go into both images' trust
# stores, so pip in the image build trusts what this machine trusts.
SITE_CA_DIR=/usr/local/share/ca-certificates
LABEL=org.kubeedge.mqtt-metamanager.recipe
FORCE=${1:-}

# The recipe is this script, the mirror, the suite and the site CAs: change any, images rebuild.
RECIPE=$( {
  cat "$SELF"
  echo "$MIRROR $SUITE"
  find "$SITE_CA_DIR" -name '*.crt' -type f -print0 2>/dev/null | sort -z | xargs -0 -r cat
} | sha256sum | cut -c1-16)

log() { echo "== airgap: $*"; }
die() { echo "airgap-images: $*" >&2; exit 1; }

image_is_current() {
  [ "$FORCE" != "--force" ] &&
    [ "$(docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null)" \
      = "$RECIPE" ]
}

# --- preconditions ----------------------------------------------------------------------
command -v docker >/dev/null || die "docker is not installed (apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "no Docker engine answers (start dockerd)"

write_env() {
  # Keep whatever else the user put in .env; replace only our two keys.
  local tmp
  tmp=$(mktemp)
  if [ -f .env ]; then
    grep -v -E '^(PYTHON_BASE_IMAGE|MOSQUITTO_IMAGE)=' .env >"$tmp" || true
  fi
  if ! grep -q '^# Written by scripts/airgap-images.sh' "$tmp"; then
    echo "# Written by scripts/airgap-images.sh: local images built from Debian packages." >>"$tmp"
  fi
  {
    echo "PYTHON_BASE_IMAGE=$PYTHON_IMAGE"
    echo "MOSQUITTO_IMAGE=$MOSQUITTO_IMAGE"
  } >>"$tmp"
  mv "$tmp" .env
  chmod 644 .env
  log "wrote .env (PYTHON_BASE_IMAGE=$PYTHON_IMAGE, MOSQUITTO_IMAGE=$MOSQUITTO_IMAGE)"
}

if image_is_current "$PYTHON_IMAGE" && image_is_current "$MOSQUITTO_IMAGE"; then
  log "images are current ($PYTHON_IMAGE, $MOSQUITTO_IMAGE, recipe $RECIPE)"
  write_env
  exit 0
fi

[ "$(id -u)" = 0 ] || die "building the images needs root (debootstrap and chroot)"
export PATH="$PATH:/usr/sbin:/sbin"
command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap)"

mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
WORK=$(mktemp -d "$CACHE/work.XXXXXX")
cleanup() {
  # A failed chroot step may leave /proc mounted: unmount before removing the tree.
  for root in "$WORK"/*/; do
    if mountpoint -q "${root}proc" 2>/dev/null; then umount "${root}proc" || true; fi
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- one minbase debootstrap, cached as a tarball ---------------------------------------
# Keyed by mirror and suite only: the images' own steps upgrade it to the latest packages.
BASE_TAR="$CACHE/$SUITE-minbase-$(echo "$MIRROR $SUITE" | sha256sum | cut -c1-12).tar"
if [ ! -s "$BASE_TAR" ]; then
  log "debootstrap $SUITE (minbase) from $MIRROR"
  debootstrap --variant=minbase "$SUITE" "$WORK/base" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
  # Sources for apt inside the chroot: the release, its updates and its security fixes.
  cat >"$WORK/base/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb ${MIRROR%/debian}/debian-security $SUITE-security main
EOF
  rm -rf "$WORK/base/var/cache/apt/archives/"*.deb
  tar -C "$WORK/base" --numeric-owner -cf "$BASE_TAR.part" .
  mv "$BASE_TAR.part" "$BASE_TAR"
  rm -rf "$WORK/base"
else
  log "using cached $BASE_TAR"
fi

# run_in ROOT CMD...: run a command inside the rootfs with a network and no service starts.
run_in() {
  local root=$1
  shift
  chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"
}

# install_site_cas ROOT: this machine's local CAs into the rootfs trust store.
install_site_cas() {
  local root=$1
  if find "$SITE_CA_DIR" -name '*.crt' -type f 2>/dev/null | grep -q .; then
    mkdir -p "$root$SITE_CA_DIR"
    find "$SITE_CA_DIR" -name '*.crt' -type f -exec cp {} "$root$SITE_CA_DIR/" \;
    run_in "$root" update-ca-certificates
  fi
}

# make_rootfs NAME PACKAGES: extract the base and install the packages into it.
make_rootfs() {
  local name=$1 packages=$2 root="$WORK/$1"
  mkdir -p "$root"
  tar -C "$root" -xf "$BASE_TAR"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 755 "$root/usr/sbin/policy-rc.d"
  mount -t proc proc "$root/proc"
  # shellcheck disable=SC2086 # the package list is meant to split
  {
    run_in "$root" apt-get update -qq &&
      run_in "$root" apt-get upgrade -y -qq &&
      run_in "$root" apt-get install -y -qq --no-install-recommends $packages &&
      run_in "$root" apt-get clean &&
      install_site_cas "$root"
  } >"$WORK/$name-apt.log" 2>&1 || {
    umount "$root/proc"
    tail -20 "$WORK/$name-apt.log" >&2
    die "apt-get in the $name rootfs failed"
  }
  umount "$root/proc"
  rm -rf "$root/var/lib/apt/lists/"* "$root/usr/share/doc/"* "$root/usr/share/man/"* \
    "$root/usr/share/info/"* "$root/usr/share/locale/"* "$root/var/log/"*.log \
    "$root/var/cache/debconf/"*-old "$root/usr/sbin/policy-rc.d"
  : >"$root/etc/resolv.conf"
}

# import_rootfs NAME IMAGE CHANGE...: tar the rootfs into `docker import` with its settings.
import_rootfs() {
  local name=$1 image=$2
  shift 2
  local changes=()
  for change in "$@" "LABEL $LABEL=$RECIPE" \
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" "ENV LANG=C.UTF-8"; do
    changes+=(--change "$change")
  done
  local previous
  previous=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
  tar -C "$WORK/$name" --numeric-owner -c . | docker import "${changes[@]}" - "$image" >/dev/null
  if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect -f '{{.Id}}' "$image")" ]; then
    docker image rm "$previous" >/dev/null 2>&1 || true   # still used by a container: keep it
  fi
  local size
  size=$(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}')
  log "imported $image ($size)"
}

# --- the Python base image --------------------------------------------------------------
if image_is_current "$PYTHON_IMAGE"; then
  log "$PYTHON_IMAGE is current"
else
  log "building $PYTHON_IMAGE ($PYTHON_PACKAGES)"
  make_rootfs python "$PYTHON_PACKAGES"
  import_rootfs python "$PYTHON_IMAGE" 'CMD ["python3"]'
fi

# --- the Mosquitto image ----------------------------------------------------------------
if image_is_current "$MOSQUITTO_IMAGE"; then
  log "$MOSQUITTO_IMAGE is current"
else
  log "building $MOSQUITTO_IMAGE ($MOSQUITTO_PACKAGES)"
  make_rootfs mosquitto "$MOSQUITTO_PACKAGES"
  root="$WORK/mosquitto"
  # conf.d: the project's mosquitto.conf ends with include_dir /mosquitto/config/conf.d,
  # which mosquitto refuses when missing; compose mounts ./mosquitto/conf.d over it.
  mkdir -p "$root/mosquitto/config/conf.d" "$root/mosquitto/data" "$root/mosquitto/log"
  # A default config so the image runs bare; compose and the tests mount the project's own.
  cat >"$root/mosquitto/config/mosquitto.conf" <<'EOF'
# Default for the air-gapped Mosquitto image: one listener, persistence, log to stdout.
listener 1883
allow_anonymous true
persistence true
persistence_location /mosquitto/data/
log_dest stdout
EOF
  run_in "$root" chown -R mosquitto:mosquitto /mosquitto/data /mosquitto/log
  # Debian's mosquitto block-buffers stdout when it is not a tty: stdbuf makes the
  # "mosquitto version X running" line (what waiters look for) appear as it happens.
  import_rootfs mosquitto "$MOSQUITTO_IMAGE" \
    'USER mosquitto' 'WORKDIR /mosquitto' 'EXPOSE 1883' \
    'CMD ["stdbuf", "-oL", "mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]'
fi

write_env
