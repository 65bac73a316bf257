"""``mqtt-metamanager health``: ask a running service's /readyz and say why it is not ready."""

from __future__ import annotations

import http.client
import json

from ..config import listen_address

# Where to reach a listener bound to every address.
_REACH = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def check_ready(listen: str, timeout: float) -> tuple[bool, str]:
    """(ready, one line saying so or naming each failing check) for ``http.listen``."""
    address = listen_address(listen)
    if address is None:
        return False, f"unready: http.listen {listen!r} is not host:port"
    host, port = address
    host = _REACH.get(host, host)
    where = f"http://{f'[{host}]' if ':' in host else host}:{port}/readyz"
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", "/readyz")
        response = connection.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        return False, f"unready: {where}: {exc}"
    finally:
        connection.close()
    try:
        verdict = json.loads(body)
        failing = verdict["failing"]
        checks = verdict["checks"]
        reasons = "; ".join(f"{name}: {checks[name]['detail']}" for name in failing)
    except (ValueError, KeyError, TypeError):
        return False, f"unready: {where}: HTTP {response.status}, not a readiness answer"
    if response.status == 200 and not failing:
        return True, "ready"
    return False, f"unready: {reasons or f'HTTP {response.status}'}"
