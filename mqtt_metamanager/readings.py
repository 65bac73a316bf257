"""What the metrics read from one ``Result``: its outcome's label and the effects merged
into it (remote queries asked and ended, pod-status syncs, the cloud link), and the
closed set of operation labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .operations import OPERATIONS
from .outcome import CLOUD_TIMEOUT, Asked, Kind, Outcome, Synced

if TYPE_CHECKING:
    from .outcome import Result

# Label values come from this closed list: an input's operation is text its sender chose,
# and a label per distinct text would let any sender grow this process without bound.
BRIDGE_STATE = "bridge_state"  # the operation label of the Mosquitto bridge's 1/0
# How a remote query ended, by the outcome that ended it.
REMOTE_RESULTS: dict[Outcome, str] = {
    Kind.REMOTE_ANSWER: "cloud",
    Kind.REMOTE_ERROR: "cloud_error",
    Kind.REMOTE_FALLBACK: "local_fallback",
    CLOUD_TIMEOUT: "timeout",
}


@dataclass(frozen=True)
class Reading:
    """What metrics take from one ``Result``: its own outcome and those merged into it."""

    label: str
    remote_results: tuple[str, ...] = ()
    remote_attempts: int = 0
    syncs: tuple[Synced | None, ...] = ()  # None: a sync skipped (the link is down)
    link: str = ""  # "up" or "down" when the input changed the cloud link

    @property
    def has_effects(self) -> bool:
        return bool(self.remote_results or self.remote_attempts or self.syncs)


def _has_effect(outcome: Outcome) -> bool:
    return (
        isinstance(outcome, Synced | Asked)
        or outcome in REMOTE_RESULTS
        or (outcome is Kind.SYNC_SKIPPED)
    )


_PLAIN: dict[Outcome, Reading] = {}  # the readings of outcomes with nothing more to read
PLAIN_MAX = 256  # outcomes are values of a closed set in the code; a bound all the same


def read(result: Result) -> Reading:
    """Read one result's outcome and the outcomes ``Result.extend`` merged into it."""
    outcome = result.outcome
    link = "up" if outcome is Kind.CONNECTED else "down" if outcome is Kind.DISCONNECTED else ""
    if not result.merged and not _has_effect(outcome):
        # Most inputs: one reading per outcome, made once (the loop reads one per input).
        reading = _PLAIN.get(outcome)
        if reading is None:
            reading = Reading(outcome.label, link=link)
            if len(_PLAIN) < PLAIN_MAX:
                _PLAIN[outcome] = reading
        return reading
    remote: list[str] = []
    attempts = 0
    syncs: list[Synced | None] = []
    for piece in (outcome, *result.merged):
        if isinstance(piece, Asked):
            attempts += 1
        elif isinstance(piece, Synced):
            syncs.append(piece)
        elif piece is Kind.SYNC_SKIPPED:
            syncs.append(None)
        elif piece in REMOTE_RESULTS:
            remote.append(REMOTE_RESULTS[piece])
    return Reading(outcome.label, tuple(remote), attempts, tuple(syncs), link)


def operation_label(operation: str) -> str:
    """The operation as a label: one of ``OPERATIONS``, ``bridge_state``, ``unknown`` (the
    input could not be decoded that far) or ``other``."""
    if operation in OPERATIONS or operation == BRIDGE_STATE:
        return operation
    return "other" if operation else "unknown"
