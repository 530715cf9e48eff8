"""Notices, from the client's side, that a cluster's controller has gone.

ipyparallel's Client has no liveness check (its requests wait forever on a dead controller),
and the controller's pid is known only when this process started it. But a controller that
dies closes its end of the client's connections, and libzmq reports that on a monitor socket
at once, at no cost while nothing happens. A controller killed outright leaves its scheduler
processes behind, and they hold its listening ports: libzmq then reconnects at the TCP level,
but no ZMTP handshake ever succeeds again. So the connection counts as lost from a disconnect
until a handshake succeeds.
"""

from __future__ import annotations

import threading
import time

import zmq
from zmq.utils.monitor import recv_monitor_message


class ControllerWatch:
    """Follows one connected socket of the client (to the controller's hub) through a
    monitor; `lost_for()` reads what happened since the last call, without blocking."""

    def __init__(self, socket: zmq.Socket) -> None:
        self._socket = socket
        self._monitor: zmq.Socket | None = socket.get_monitor_socket(
            zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self._lock = threading.Lock()  # runs' threads and the notebook's ask at once
        self._lost_since: float | None = None
        self.endpoint = socket.getsockopt_string(zmq.LAST_ENDPOINT)
        """The controller's address, as the socket connected to it."""

    def lost_for(self) -> float | None:
        """Seconds since the connection to the controller closed and was not made again;
        None while it stands."""
        with self._lock:
            while self._monitor is not None:
                try:
                    event = recv_monitor_message(self._monitor, zmq.NOBLOCK)["event"]
                except zmq.Again:
                    break
                if event == zmq.EVENT_DISCONNECTED and self._lost_since is None:
                    self._lost_since = time.monotonic()
                elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    self._lost_since = None
            return None if self._lost_since is None else time.monotonic() - self._lost_since

    def close(self) -> None:
        """Stop following the socket (before the client closes it)."""
        with self._lock:
            if self._monitor is None:
                return
            try:
                self._socket.disable_monitor()
            except zmq.ZMQError:  # the socket is closed already
                pass
            self._monitor.close(linger=0)
            self._monitor = None
