"""The service's local HTTP endpoint (SPEC §12): /healthz, /readyz and /metrics.

``endpoint_for`` builds it from the ``http`` config section; the service starts it before
it connects to the broker and stops it last.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client.exposition import choose_encoder

from ..config import ConfigError, HTTPConfig, listen_address
from ..kube.api import KubeAPI
from ..metrics import ServiceMetrics
from .health import health, readiness
from .kube import kube_fallback
from .server import HttpEndpoint, Request, Response, Route, json_response

__all__ = ["HttpEndpoint", "endpoint_for", "read_token"]

HEALTHZ, READYZ, METRICS = "/healthz", "/readyz", "/metrics"
PUBLIC = (HEALTHZ, READYZ)  # a container runtime's probe has no token


def read_token(config: HTTPConfig) -> bytes | None:
    if not config.token_file:
        return None
    try:
        token = Path(config.token_file).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"http.token_file: cannot read: {exc.strerror}") from None
    if not token:
        raise ConfigError(f"http.token_file: {config.token_file} is empty")
    return token


def routes(metrics: ServiceMetrics, outbox_lag: float) -> dict[str, Route]:
    def healthz(_request: Request) -> Response:
        verdict = health(metrics.state)
        return json_response(200 if verdict.ok else 503, verdict.body("healthy"))

    def readyz(_request: Request) -> Response:
        verdict = readiness(metrics.state, metrics.watched, outbox_lag)
        return json_response(200 if verdict.ok else 503, verdict.body("ready"))

    def metrics_text(request: Request) -> Response:
        encode, content_type = choose_encoder(request.accept)
        return Response(200, encode(metrics.registry), content_type)

    return {HEALTHZ: healthz, READYZ: readyz, METRICS: metrics_text}


def endpoint_for(
    config: HTTPConfig, metrics: ServiceMetrics, kube: KubeAPI | None = None
) -> HttpEndpoint | None:
    """The endpoint ``config`` asks for (not started), None when ``http.listen`` is empty;
    with ``kube``, the Kubernetes read API too."""
    if not config.listen:
        return None
    address = listen_address(config.listen)
    if address is None:  # config.from_mapping refuses it: only a Config built by hand
        raise ConfigError(f"http.listen: {config.listen!r} is not host:port")
    return HttpEndpoint(
        address,
        routes(metrics, config.ready_outbox_lag),
        token=read_token(config),
        public=PUBLIC,
        fallback=None if kube is None else kube_fallback(kube),
    )
