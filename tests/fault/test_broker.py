"""The broker goes away: restarts with and without its persistence, and absent at start."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

from tests.fault.stream import Figures, Recorder, Stream, finish_run
from tests.support import Broker, Publisher, ServiceProcess, Watcher, envelope, reply_to, wait_until

RESTART_MESSAGES = 2000
RESTARTS = 2


def test_broker_restart_mid_stream_loses_nothing(
    broker: Broker,
    make_service: Callable[..., ServiceProcess],
    recorder: Recorder,
    record_figures: list[Figures],
) -> None:
    started = time.monotonic()
    svc = make_service("svc")
    stream = Stream(broker.port, RESTART_MESSAGES)
    figures = Figures("broker restart", RESTART_MESSAGES, 0, "restarts")
    record_figures.append(figures)
    stream.start()
    for n in range(1, RESTARTS + 1):
        threshold = RESTART_MESSAGES * n // (RESTARTS + 2)
        wait_until(lambda t=threshold: recorder.replied(stream.msg_ids) >= t, 60, "progress")
        broker.restart()
        figures.faults += 1
        # Same process, reconnected by itself, and says so on the status topic.
        wait_until(lambda n=n: svc.logs().count("connected to") >= n + 1, 30, "a reconnect")
        wait_until(lambda: recorder.last_status() == b"online", 15, "status online again")
        assert svc.proc is not None and svc.proc.poll() is None, svc.logs()
    finish_run(svc, stream, recorder, figures, started)


def test_broker_restart_without_session_resubscribes_and_goes_online(
    broker: Broker,
    make_service: Callable[..., ServiceProcess],
    publisher: Publisher,
    watcher: Watcher,
) -> None:
    svc = make_service("svc")
    first = envelope("insert", "default/pod/before", {"n": 1})
    publisher.send(first)
    watcher.wait_for("kubeedge/edgehub/in", reply_to(first["header"]["msg_id"]))
    # The broker loses everything: sessions, subscriptions, retained messages.
    broker.stop()
    (broker.workdir / "mosquitto.db").unlink(missing_ok=True)
    broker.start()
    wait_until(lambda: svc.logs().count("session_present=False") >= 2, 30, "a fresh session")
    fresh = Watcher(broker.port)
    try:
        # The retained status came back from the service itself, not from the old broker.
        fresh.wait_for("kubeedge/metamanager/status", lambda p: p == b"online", timeout=15)
        late = Publisher(broker.port)
        try:
            second = envelope("insert", "default/pod/after", {"n": 2})
            late.send(second)
            fresh.wait_for("kubeedge/edgehub/in", reply_to(second["header"]["msg_id"]))
            fresh.wait_for(
                "kubeedge/edged/in", lambda m: m["header"]["msg_id"] == second["header"]["msg_id"]
            )
        finally:
            late.close()
    finally:
        fresh.close()
    assert svc.proc is not None and svc.proc.poll() is None


def test_broker_absent_at_start_then_up(
    broker: Broker, make_service: Callable[..., ServiceProcess]
) -> None:
    broker.stop()
    svc = make_service("svc", wait_online=False)
    wait_until(lambda: "unreachable" in svc.logs(), 15, "a failed first connect")
    broker.start()
    svc.wait_online(30)
    watcher, publisher = Watcher(broker.port), Publisher(broker.port)
    try:
        message = envelope("insert", "default/pod/late", {"n": 1})
        publisher.send(message)
        watcher.wait_for("kubeedge/edgehub/in", reply_to(message["header"]["msg_id"]))
    finally:
        watcher.close()
        publisher.close()


def test_sigterm_while_broker_absent_exits_zero(
    broker: Broker, make_service: Callable[..., ServiceProcess]
) -> None:
    # Before the fix the first-connect retry ignored the stop request: SIGTERM hung forever.
    broker.stop()
    svc = make_service("svc", wait_online=False)
    wait_until(lambda: "unreachable" in svc.logs(), 15, "a failed first connect")
    svc.signal(signal.SIGTERM)
    assert svc.proc is not None
    assert svc.proc.wait(5) == 0, svc.logs()
    svc.proc = None
