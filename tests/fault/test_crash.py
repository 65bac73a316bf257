"""The service process dies: kill -9 at random moments, and SIGTERM, mid-stream."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable

from tests.fault.stream import Figures, Recorder, Stream, finish_run, read_db
from tests.support import Broker, ServiceProcess, wait_until

KILL_MESSAGES = 3000
KILLS = 6
SIGTERM_MESSAGES = 2000


def test_kill9_at_random_moments_loses_nothing(
    broker: Broker,
    make_service: Callable[..., ServiceProcess],
    recorder: Recorder,
    record_figures: list[Figures],
) -> None:
    seed = int(os.environ.get("FAULT_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    started = time.monotonic()
    svc = make_service("svc")
    stream = Stream(broker.port, KILL_MESSAGES)
    figures = Figures("kill -9", KILL_MESSAGES, 0, "kills", extra={"seed": seed})
    record_figures.append(figures)
    # Kill once this many inputs have been answered: spread over the stream, random.
    thresholds = sorted(rng.sample(range(KILL_MESSAGES // 20, KILL_MESSAGES * 9 // 10), KILLS))
    stream.start()
    for threshold in thresholds:
        wait_until(
            lambda t=threshold: recorder.replied(stream.msg_ids) >= t,
            60,
            f"{threshold} replies before the next kill",
        )
        # Not synchronisation: a random extra moment, so kills land anywhere in the
        # commit/publish/ack cycle rather than right after a reply was seen.
        time.sleep(rng.uniform(0, 0.05))
        svc.kill()
        figures.faults += 1
        # Publishes committed but not yet acknowledged by the broker: sent again on restart.
        _integrity, _meta, outbox = read_db(svc.db_path)
        figures.extra["outbox_at_kills"] = figures.extra.get("outbox_at_kills", 0) + outbox
        svc.start()
    finish_run(svc, stream, recorder, figures, started)


def test_sigterm_mid_stream_drains_and_exits_zero(
    broker: Broker,
    make_service: Callable[..., ServiceProcess],
    recorder: Recorder,
    record_figures: list[Figures],
) -> None:
    started = time.monotonic()
    svc = make_service("svc")
    stream = Stream(broker.port, SIGTERM_MESSAGES)
    figures = Figures("SIGTERM", SIGTERM_MESSAGES, 0, "sigterms")
    record_figures.append(figures)
    stream.start()
    wait_until(
        lambda: recorder.replied(stream.msg_ids) >= SIGTERM_MESSAGES // 3, 60, "a third answered"
    )
    svc.signal(signal.SIGTERM)
    figures.faults += 1
    assert svc.proc is not None
    assert svc.proc.wait(15) == 0, svc.logs()
    svc.proc = None
    # Drained: whatever it committed was published and acknowledged before it exited.
    integrity, meta, outbox = read_db(svc.db_path)
    assert integrity == "ok" and outbox == 0, (integrity, outbox)
    figures.extra["stored_at_sigterm"] = len(meta)
    # The rest waits in the broker (persistent session) for the next run.
    svc.start()
    finish_run(svc, stream, recorder, figures, started)
