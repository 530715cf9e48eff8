"""Where a controller listens, and whether its traffic is encrypted: the network promise.

A local cluster listens on loopback only, and its connection files are readable by their
owner alone (0600). A cluster whose engines run on other hosts listens on the address those
hosts reach it by; then CurveZMQ (ipyparallel's `IPController.enable_curve`) encrypts and
authenticates every connection, unless the caller opts out with `encrypt=False`.
"""

from __future__ import annotations

import ipaddress
import socket

import psutil

LOOPBACK = "127.0.0.1"


def controller_address(address: str | None) -> str:
    """The IPv4 address to listen on for `address`: an IP, a host name or an interface name
    (`eth0`, `ib0`); None means loopback (a local cluster)."""
    if address is None:
        return LOOPBACK
    interfaces = psutil.net_if_addrs()
    if address in interfaces:
        for entry in interfaces[address]:
            if entry.family == socket.AF_INET:
                return entry.address
        raise ValueError(f"interface {address!r} has no IPv4 address")
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        pass
    try:
        return socket.gethostbyname(address)
    except OSError:
        names = ", ".join(sorted(interfaces))
        raise ValueError(f"controller_ip {address!r} is neither an IP address, a host name "
                         f"nor an interface of this machine ({names})") from None


def is_loopback(address: str) -> bool:
    """True when `address` is reachable from this host alone."""
    return ipaddress.ip_address(address).is_loopback


def encryption_args(address: str, encrypt: bool | None = None) -> list[str]:
    """The controller's CurveZMQ setting: on beyond loopback unless `encrypt=False`, off on
    loopback unless `encrypt=True` (the connection files carry the server key to engines
    and clients)."""
    on = not is_loopback(address) if encrypt is None else encrypt
    return [f"--IPController.enable_curve={on}"]
