"""Named values of the traces' ``status`` and ``kind`` columns, and of the causes that stop a client.

Plain string constants (not an Enum) so that a trace cell is exactly the string it always was, and
the network side can use them without importing anything.
"""
from __future__ import annotations


class Status:
    """Outcome of a timed activity (events table) or of a client's round (clients table)."""

    ACTIVE = "active"    # a transfer still in flight (never written)
    OK = "ok"            # finished in full
    LATE = "late"        # stopped by the deadline, or not needed once over-selection had enough
    DROPPED = "dropped"  # the device's battery emptied
    OFFLINE = "offline"  # the device went offline (availability trace)
    ERROR = "error"      # an upload attempt lost to a packet error (channel.packet_errors), sent again
    DETACHED = "detached"  # a transfer between two cells during a handover interruption (never written)


class Kind:
    """What an events row is."""

    DOWNLOAD = "download"
    COMPUTE = "compute"
    UPLOAD = "upload"
    AGGREGATE = "aggregate"
    BACKHAUL = "backhaul"
    HANDOVER = "handover"
    DROPOUT = "dropout"
    OFFLINE = "offline"
    IDLE = "idle"  # waiting inside a round, drawing the profile's idle_power_w (pwffsim.sim.idle)


class StopCause:
    """Why the server interrupts a client's process (the ``simpy.Interrupt`` cause)."""

    DEADLINE = "deadline"  # deadline passed, over-selection had enough, or the run ended
    OFFLINE = "offline"    # the device went offline
    BATTERY = "battery"    # the battery emptied while the device was idle (pwffsim.sim.idle)

    @staticmethod
    def status(cause: object) -> str:
        """The status an activity stopped for ``cause`` ends with."""
        if cause == StopCause.BATTERY:
            return Status.DROPPED
        return Status.OFFLINE if cause == StopCause.OFFLINE else Status.LATE
