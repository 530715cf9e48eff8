"""Widget messages while a cell blocks the kernel: the dashboard's Cancel in a foreground cell.

A cell that waits holds the kernel's main thread, and the front-end's comm messages (a click)
queue behind it. `pumped()` gives the waiting loop a function that handles them now.

Why not jupyter-ui-poll: it calls `Kernel.do_one_iteration`, which ipykernel removed in 7.1
(ipykernel c56a7aab), and swallows the AttributeError, so on the ipykernel `make test` installs
(7.4.0) a click is never handled during the wait (tested: the comm message arrived only after
the cell ended). ipykernel 7 hands the main thread its shell messages through an inproc socket
(`shell_channel_thread.manager`, ipykernel's subshell layout); this module reads that socket:
comm messages go to their handler at once, every other message (a queued cell's
execute_request, a completion request) is held and handed back to the kernel's own loop, in
order, when the wait ends. An error the cell then raises aborts the held execute_requests as
it aborts any queued cell (ipykernel's stop_on_error), so "Run All" stops there.
tests/cluster/test_dashboard.py checks both on a real kernel. Where the kernel has no such
socket (ipykernel 6, other kernels) the wait is plain: a click lands when the cell ends, and
the kernel's stop button still cancels the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import zmq
from IPython import get_ipython


@contextmanager
def pumped() -> Iterator[Callable[[], None]]:
    """A function that handles the comm messages waiting for this kernel (a no-op where it
    cannot); held messages go back to the kernel when the block ends."""
    kernel = getattr(get_ipython(), "kernel", None)
    socket = _main_shell_socket(kernel)
    if socket is None:
        yield lambda: None
        return
    pump = _Pump(kernel, socket)
    try:
        yield pump
    finally:
        pump.give_back()


def _main_shell_socket(kernel: Any) -> zmq.Socket | None:
    """The inproc socket the main thread's shell messages arrive on (ipykernel ≥ 7)."""
    manager = getattr(getattr(kernel, "shell_channel_thread", None), "manager", None)
    if manager is None or not hasattr(manager, "get_shell_channel_to_subshell_pair"):
        return None
    return manager.get_shell_channel_to_subshell_pair(None).to_socket


class _Pump:
    """Reads the main shell socket: comm messages handled, the rest held in order."""

    def __init__(self, kernel: Any, socket: zmq.Socket) -> None:
        self.kernel = kernel
        self.socket = socket
        self.held: list[list] = []

    def __call__(self) -> None:
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self.held.append(frames)  # held first: an interrupt now must not lose it
            if self._handled(frames):  # comm messages overtake queued cells, by design
                self.held.pop()

    def _handled(self, frames: list) -> bool:
        """Run a comm message's handler (output stays with the waiting cell); False for any
        other message."""
        session = self.kernel.session
        try:
            idents, message = session.feed_identities(frames, copy=False)
            header = session.deserialize(message, content=False, copy=False)["header"]
        except Exception:  # not a message (ipykernel's own "stop aborting" signal)
            return False
        if header.get("msg_type") != "comm_msg":
            return False
        message = session.deserialize(message, content=True, copy=False)
        self.kernel.shell_handlers["comm_msg"](None, idents, message)
        return True

    def give_back(self) -> None:
        """Hand the held messages to the kernel's loop; they run after the cell, in order."""
        for frames in self.held:
            self.kernel.io_loop.add_callback(self.kernel.shell_main, None, frames)
        self.held = []
