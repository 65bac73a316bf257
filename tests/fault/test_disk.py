"""The disk fills up under the store: 503 to the sender, input not acknowledged, recovery.

A tiny tmpfs holds the database (mounting needs root; without it the test skips and says
why). A filler file takes the rest of the space, then an insert too big for what is left
arrives. chmod would not do: root writes through 0444 files.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fault.stream import Figures, read_db
from tests.support import CLOUD, EDGED, Broker, Publisher, ServiceProcess, Watcher, envelope
from tests.support import reply_to as reply_of

TMPFS_SIZE = "4m"  # the object and its change history (docs/kubernetes-api.md): twice BIG a write
BIG = "x" * 300_000  # more than the WAL has ever held here: it must grow, and cannot


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tiny"
    mount.mkdir()
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        who = "not root" if os.geteuid() != 0 else "root, but"
        pytest.skip(f"cannot mount a tmpfs ({who}): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount: Path) -> Path:
    """Take every free byte of ``mount``; returns the filler file."""
    filler = mount / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as f:
        for _ in range(10_000):  # bounded: 640 MB is far more than the tmpfs
            try:
                f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
        while True:
            try:
                f.write(b"\0" * 512)
            except OSError:
                break
    return filler


def is_503(msg_id: str) -> Callable[[object], bool]:
    def match(m: object) -> bool:
        return (
            reply_of(msg_id)(m)
            and isinstance(m, dict)
            and m["route"]["operation"] == "error"
            and m["content"]["code"] == 503
        )

    return match


def is_ok(msg_id: str) -> Callable[[object], bool]:
    return lambda m: reply_of(msg_id)(m) and m["route"]["operation"] == "response"


def test_full_disk_503_unacked_and_recovers(
    broker: Broker,
    make_service: Callable[..., ServiceProcess],
    watcher: Watcher,
    publisher: Publisher,
    tiny_disk: Path,
    record_figures: list[Figures],
) -> None:
    started = time.monotonic()
    db = tiny_disk / "meta.db"
    svc = make_service("svc", **{"database.path": str(db)})
    figures = Figures("full disk", 3, 0, "fills")
    record_figures.append(figures)
    warm = envelope("insert", "default/pod/warm", {"n": 0})
    publisher.send(warm)
    watcher.wait_for(CLOUD, is_ok(warm["header"]["msg_id"]))

    # 1. Full while running: 503 once, the service stays up and answers reads, and the
    #    input is applied by the retry once space is back.
    filler = fill(tiny_disk)
    figures.faults += 1
    first = envelope("insert", "default/pod/first", {"big": BIG})
    first_id = first["header"]["msg_id"]
    publisher.send(first)
    watcher.wait_for(CLOUD, is_503(first_id), timeout=15)
    # Still answering (every reply goes through the outbox, so a read is a 503 too).
    query = envelope("query", "default/pod/warm")
    publisher.send(query)
    watcher.wait_for(CLOUD, reply_of(query["header"]["msg_id"]), timeout=10)
    assert svc.proc is not None and svc.proc.poll() is None
    assert not any(is_ok(first_id)(m) for m in watcher.on(CLOUD))
    filler.unlink()
    watcher.wait_for(CLOUD, is_ok(first_id), timeout=30)
    watcher.wait_for(EDGED, lambda m: m["header"]["msg_id"] == first_id, timeout=10)
    assert sum(1 for m in watcher.on(CLOUD) if is_503(first_id)(m)) == 1
    assert "disk is full" in svc.logs(), "the store failure must name its cause"

    # 2. Full, then the process dies: the broker still has the input (it was never
    #    acknowledged) and hands it to the next run, which applies it.
    filler = fill(tiny_disk)
    figures.faults += 1
    second = envelope("insert", "default/pod/second", {"big": BIG})
    second_id = second["header"]["msg_id"]
    publisher.send(second)
    watcher.wait_for(CLOUD, is_503(second_id), timeout=15)
    svc.kill()
    filler.unlink()
    svc.start()
    watcher.wait_for(CLOUD, is_ok(second_id), timeout=30)
    watcher.wait_for(EDGED, lambda m: m["header"]["msg_id"] == second_id, timeout=10)

    assert svc.stop() == 0
    integrity, meta, outbox = read_db(db)
    assert integrity == "ok"
    stored = {
        k: meta.get(k) for k in ("default/pod/warm", "default/pod/first", "default/pod/second")
    }
    figures.lost_objects = sum(1 for v in stored.values() if v is None)
    figures.extra["store_failures_logged"] = svc.logs().count("store failure")
    figures.extra["outbox_left"] = outbox
    figures.seconds = time.monotonic() - started
    assert figures.losses == 0, figures.line()
    assert stored["default/pod/first"] == {"big": BIG}
