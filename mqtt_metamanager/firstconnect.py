"""The first connection to the broker: tried with backoff until it works, the attempts run
out, or the service is told to stop while the broker is away. Reconnects after that are
the network loop's (``Link.tend``), which must never sleep."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import tenacity

log = logging.getLogger(__name__)

BACKOFF = tenacity.wait_exponential(multiplier=0.2, max=10)


def connect_with_backoff(
    connect: Callable[[], object], where: str, attempts: int, cancel: threading.Event
) -> bool:
    """Call ``connect`` until it raises no ``OSError`` (``attempts`` 0 = forever). False
    when it failed and ``cancel`` was set (a SIGTERM must not wait for a broker that never
    comes): ``cancel`` cuts the backoff's wait short, and the attempt after it is the last.
    The last ``OSError`` is raised when the attempts run out."""
    stop: tenacity.stop.stop_base = tenacity.stop_when_event_set(cancel)
    if attempts:
        stop = stop | tenacity.stop_after_attempt(attempts)

    def sleep(seconds: float) -> None:  # woken at once by a stop
        cancel.wait(seconds)

    retrying = tenacity.Retrying(
        wait=BACKOFF,
        stop=stop,
        sleep=sleep,
        retry=tenacity.retry_if_exception_type(OSError),
        before_sleep=lambda state: log.warning(
            "broker %s unreachable (%s), retrying",
            where,
            state.outcome.exception() if state.outcome else "",
        ),
        reraise=True,
    )
    try:
        retrying(connect)
    except OSError:
        if cancel.is_set():
            return False
        raise
    return True
