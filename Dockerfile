# mqtt-metamanager: the service image.
#
# The base is any Debian-like image with python3 >= 3.11 and its venv module: the public
# python:3.11-slim by default, or the air-gapped one that scripts/airgap-images.sh builds
# from Debian packages (docker compose picks it up from .env as PYTHON_BASE_IMAGE).
ARG BASE_IMAGE=python:3.11-slim

# --- build: the package and its dependencies into a venv ---------------------------------
FROM ${BASE_IMAGE} AS build
# pip trusts the image's CA store (the air-gapped base carries the site's CAs).
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
RUN python3 -m venv /opt/metamanager
COPY . /src
RUN /opt/metamanager/bin/pip install --no-compile /src \
 && /opt/metamanager/bin/pip uninstall -y pip setuptools \
 && /opt/metamanager/bin/python -m compileall -q /opt/metamanager/lib

# --- run: the venv, the config and an unprivileged user ------------------------------------
FROM ${BASE_IMAGE}
RUN groupadd --system --gid 10001 metamanager \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin metamanager \
 && mkdir -p /data /auth \
 && chown metamanager:metamanager /data /auth
COPY --from=build /opt/metamanager /opt/metamanager
COPY conf/edge.yaml /app/conf/edge.yaml

# Config: /app/conf/edge.yaml (mount your own over /app/conf), then METAMANAGER_* on top.
# glibc's arenas and mmap threshold are set by the service itself (memory.* in the config).
ENV PATH=/opt/metamanager/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    METAMANAGER_MQTT__HOST=mosquitto \
    METAMANAGER_DATABASE__PATH=/data/metamanager.db
WORKDIR /app
# /data: the store. /auth: broker credentials (`mqtt-metamanager auth init --dir /auth`); a
# fresh named volume mounted there takes this directory's owner, so the unprivileged user
# can write it.
VOLUME ["/data"]
USER metamanager

# Healthy means ready: the service's /readyz (http.listen, 127.0.0.1:10550 inside the
# container) says its loop turns, its store is open, both MQTT links are up and the
# outbox is not stuck. `mqtt-metamanager health` prints the failing check otherwise.
HEALTHCHECK --interval=10s --timeout=8s --start-period=30s --retries=3 \
  CMD ["mqtt-metamanager", "health", "-c", "/app/conf/edge.yaml"]

# Exec form: the Python process is PID 1 and gets SIGTERM itself; it stops cleanly.
STOPSIGNAL SIGTERM
ENTRYPOINT ["mqtt-metamanager"]
CMD ["run", "-c", "/app/conf/edge.yaml"]
