from __future__ import annotations

import threading

import pytest

from mqtt_metamanager.firstconnect import connect_with_backoff


class Broker:
    """A connect that fails ``failures`` times, then works; it can stop the service."""

    def __init__(self, failures: int, stop: threading.Event | None = None) -> None:
        self.failures = failures
        self.calls = 0
        self.stop = stop

    def connect(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            if self.stop is not None:
                self.stop.set()  # a SIGTERM while the broker is away
            raise ConnectionRefusedError("refused")


def test_it_tries_again_until_the_broker_answers() -> None:
    broker = Broker(failures=2)
    assert connect_with_backoff(broker.connect, "b:1883", 0, threading.Event())
    assert broker.calls == 3


def test_the_last_failure_is_raised_when_the_attempts_run_out() -> None:
    broker = Broker(failures=10)
    with pytest.raises(ConnectionRefusedError):
        connect_with_backoff(broker.connect, "b:1883", 2, threading.Event())
    assert broker.calls == 2


def test_a_stop_while_the_broker_is_away_ends_it_without_connecting() -> None:
    stop = threading.Event()
    broker = Broker(failures=10, stop=stop)
    assert not connect_with_backoff(broker.connect, "b:1883", 0, stop)
    assert broker.calls == 1


def test_a_stop_during_the_backoff_ends_it_after_at_most_one_more_attempt() -> None:
    stop = threading.Event()
    broker = Broker(failures=10)

    def refused_then_stopped() -> None:
        if broker.calls == 0:  # the stop arrives from another thread, during the wait
            threading.Thread(target=stop.set).start()
        broker.connect()

    assert not connect_with_backoff(refused_then_stopped, "b:1883", 0, stop)
    assert broker.calls <= 2
