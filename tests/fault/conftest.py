"""The fault tier: real Mosquitto, the service as a subprocess, faults injected.

Every test here is marked ``fault``. The figures each test records (messages, faults,
losses, duplicates) are printed at the end of the run, in CI output too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fault.stream import Figures, Recorder
from tests.support import Broker

FIGURES: list[Figures] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.fault)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    terminalreporter.write_sep("=", "fault figures")
    for figures in FIGURES:
        terminalreporter.write_line(figures.line())


@pytest.fixture
def record_figures() -> Iterator[list[Figures]]:
    """Append a test's ``Figures`` here; they are printed whether it passes or fails."""
    mine: list[Figures] = []
    yield mine
    FIGURES.extend(mine)
    for figures in mine:
        print(f"\nFAULT FIGURES {figures.line()}")


@pytest.fixture
def recorder(broker: Broker) -> Iterator[Recorder]:
    r = Recorder(broker.port)
    yield r
    r.close()
