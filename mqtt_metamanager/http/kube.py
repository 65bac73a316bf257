"""The Kubernetes read API on the HTTP listener: /api, /apis, /version and what is under
them go to ``KubeAPI``; its answers become responses, a watch a chunked stream."""

from __future__ import annotations

from ..kube.api import Answer, KubeAPI, method_not_allowed
from .server import Fallback, Request, Response

PREFIXES = ("/api", "/apis", "/version")
READS = ("GET", "HEAD")


def _serves(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in PREFIXES)


def _response(answer: Answer) -> Response:
    return Response(answer.status, answer.body + b"\n")


def kube_fallback(api: KubeAPI) -> Fallback:
    def serve(request: Request) -> Response | None:
        if not _serves(request.path):
            return None
        if request.method not in READS:
            return _response(method_not_allowed(request.method))
        answer = api.get(request.path, request.query)
        if isinstance(answer, Answer):
            return _response(answer)
        return Response(200, b"", stream=answer.lines)

    return serve
