"""A small private network on one Linux machine: a bridge, and network namespaces as hosts.

Used by test_multihost.py to run an ipyparallel controller and engines as if on separate
machines: each "host" is a network namespace joined to a bridge in the root namespace by a
veth pair, with its own address on a private /24, and processes started in it get their own
hostname (a UTS namespace). Nothing is routed off the machine: the subnet exists only on the
bridge, and namespaces have no default route.

Everything is named after this process's pid, so parallel runs do not collide, and
`Network.close()` removes it all (processes first, then namespaces, veths and bridge) even
after a partial setup; what a killed run left behind, the next run removes. Needs root,
iproute2's `ip`, and util-linux's `unshare` and `setpriv`. `capture()` records what crosses the
bridge with `tcpdump`, and `tcp_segments()` reads such a recording back.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from helpers import pid_alive, process_tree, wait_until

PREFIX = "ppnb"
SUBNETS = [ipaddress.ip_network(f"10.213.{k}.0/24") for k in range(7, 250)]
"""Candidate test subnets, tried in order: the first one no route or address uses is taken."""
LOCK_FILE = "/tmp/pp_notebook-netns.lock"


class Unavailable(Exception):
    """Network namespaces cannot be used here; the message says why (a reason to skip)."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20,
                          check=False)
    if check and done.returncode:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done


def unavailable_reason() -> str | None:
    """Why namespaces cannot be created here, or None when they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root (run the tests as root)"
    for tool in ("ip", "unshare", "setpriv", "hostname"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (iproute2 / util-linux / hostname)"
    return None


@dataclass
class Host:
    """One namespace on the bridge: its name, address, and the root side of its link."""

    name: str  # its hostname, e.g. "hostA"
    netns: str
    address: str
    veth_root: str  # in the root namespace, on the bridge: `ip link set X down` cuts the host off
    veth_inside: str


@dataclass
class Process:
    host: Host
    popen: subprocess.Popen
    log: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


@dataclass
class Network:
    """The bridge, its hosts, and the processes started in them; `close()` removes all."""

    workdir: Path
    tag: str = field(default_factory=lambda: str(os.getpid()))
    subnet: ipaddress.IPv4Network | None = None
    bridge: str = ""
    hosts: dict[str, Host] = field(default_factory=dict)
    processes: list[Process] = field(default_factory=list)
    _links: list[str] = field(default_factory=list)
    _namespaces: list[str] = field(default_factory=list)

    @property
    def bridge_address(self) -> str:
        return str(self.subnet.network_address + 1)

    # -- building ----------------------------------------------------------------------

    def create(self, names: list[str]) -> dict[str, Host]:
        """The bridge on a free private /24 (its .1), and one namespace per name (.2, .3, ...)."""
        _remove_stale()
        self.bridge = f"ppb{self.tag}"
        with open(LOCK_FILE, "w") as lock:  # choose and claim a subnet atomically
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.subnet = _free_subnet()
            try:
                ip("link", "add", self.bridge, "type", "bridge")
            except RuntimeError as exc:
                raise Unavailable(f"cannot create a bridge: {exc}") from None
            self._links.append(self.bridge)
            ip("addr", "add", f"{self.bridge_address}/{self.subnet.prefixlen}", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
        for number, name in enumerate(names, start=2):
            self.hosts[name] = self._add_host(name, number)
        return self.hosts

    def _add_host(self, name: str, number: int) -> Host:
        address = str(self.subnet.network_address + number)
        # interface names have at most 15 characters: pp + number + pid (<= 7 digits) + x
        host = Host(name, f"{PREFIX}-{self.tag}-{name}", address,
                    veth_root=f"pp{number}{self.tag}", veth_inside=f"pp{number}{self.tag}x")
        try:
            ip("netns", "add", host.netns)
        except RuntimeError as exc:
            raise Unavailable(f"cannot create a network namespace: {exc}") from None
        self._namespaces.append(host.netns)
        ip("link", "add", host.veth_root, "type", "veth", "peer", "name", host.veth_inside)
        self._links.append(host.veth_root)
        ip("link", "set", host.veth_inside, "netns", host.netns)
        ip("link", "set", host.veth_root, "master", self.bridge, "up")
        inside = ("netns", "exec", host.netns, "ip")
        ip(*inside, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", host.veth_inside)
        ip(*inside, "link", "set", host.veth_inside, "up")
        ip(*inside, "link", "set", "lo", "up")
        return host

    def start(self, host: Host, argv: list[str], env: dict | None = None,
              log_name: str | None = None) -> Process:
        """Run `argv` in `host`'s namespace, as a host of its own, logging to a file.

        It gets its own hostname (UTS namespace) and its own pid namespace, whose init is a
        shell that waits for it: when that ends, the kernel ends every process in it (an
        engine's nanny, a controller's schedulers). `unshare` is the Popen's process: ending it
        ends the rest (`--kill-child`), and it ends if this test process dies first
        (`setpriv --pdeathsig`; `ip netns exec` and `setpriv` exec, they do not fork).
        """
        log = self.workdir / (log_name or f"{host.name}-{len(self.processes)}.log")
        wrapper = ["ip", "netns", "exec", host.netns, "setpriv", "--pdeathsig", "KILL",
                   "unshare", "--uts", "--pid", "--mount-proc", "--kill-child=KILL",
                   "sh", "-c", f'hostname {host.name} && "$@" & wait $!', "sh"]
        with open(log, "wb") as out:
            popen = subprocess.Popen([*wrapper, *argv], stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)
        process = Process(host, popen, log)
        self.processes.append(process)
        return process

    def run(self, host: Host, argv: list[str], timeout: float = 20) -> subprocess.CompletedProcess:
        """Run a short command in `host`'s namespace and wait for it."""
        return subprocess.run(["ip", "netns", "exec", host.netns, *argv], capture_output=True,
                              text=True, timeout=timeout, check=False)

    def set_link(self, host: Host, up: bool) -> None:
        """Plug or unplug `host` from the bridge (its root-side veth)."""
        ip("link", "set", host.veth_root, "up" if up else "down")

    # -- tearing down ------------------------------------------------------------------

    def stop(self, processes: list[Process], grace: float = 5.0) -> None:
        """End processes this network started, with everything they started (all of each one's
        pid namespace); the other processes of the same hosts go on."""
        trees = []
        for process in processes:
            if process.popen.poll() is None:
                trees += process_tree(process.popen.pid)
                process.popen.kill()  # unshare: its child, the pid namespace's init, follows
        for process in processes:
            process.popen.wait(grace)
        _, alive = psutil.wait_procs(trees, timeout=grace)
        if alive:
            raise RuntimeError(f"still running: {sorted(p.pid for p in alive)}")

    def close(self) -> list[str]:
        """Remove everything, whatever state setup reached; returns what could not be removed."""
        problems = []
        try:
            self.stop(self.processes)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:  # the rest must go
            problems.append(f"processes: {exc}")
        if not wait_until(lambda: not any(map(_pids_in, self._namespaces)), 5):
            problems.append(f"still running: {[_pids_in(ns) for ns in self._namespaces]}")
        for netns in reversed(self._namespaces):
            done = ip("netns", "del", netns, check=False)
            if done.returncode:
                problems.append(f"netns {netns}: {done.stderr.strip()}")
        for link in reversed(self._links):  # a veth goes with its namespace, soon after
            if _link_exists(link):
                ip("link", "del", link, check=False)
        leftover = [link for link in self._links if _link_exists(link)]
        if leftover and not wait_until(lambda: not any(map(_link_exists, leftover)), 5, 0.05):
            problems.append(f"links {[link for link in leftover if _link_exists(link)]}")
        self._namespaces.clear()
        self._links.clear()
        return problems


@dataclass(frozen=True)
class Segment:
    """One captured IPv4 TCP packet: its endpoints and payload."""

    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


@contextmanager
def capture(net: Network, path: Path, timeout: float = 10.0) -> Iterator[Path]:
    """Record every frame that crosses `net`'s bridge into the pcap file `path` while the
    `with` block runs; tcpdump is stopped on the way out, whatever happened inside.

    tcpdump says "listening" before it records reliably, and delivers what it captured in
    blocks: instead of trusting either, a UDP beacon with a unique payload is sent across
    the bridge and waited for in the file, once before the block (it is capturing) and once
    after it (everything sent in the block has been written, since frames are written in the
    order they cross the bridge). `-Z root` keeps it root, so it may write into a private dir.
    """
    if shutil.which("tcpdump") is None:
        raise Unavailable("`tcpdump` is not installed (`make system` installs it)")
    argv = ["setpriv", "--pdeathsig", "KILL", "tcpdump", "-i", net.bridge, "-w", str(path),
            "-U", "--immediate-mode", "-Z", "root", "-n", "-q"]
    log = path.with_suffix(".log")
    with open(log, "wb") as out:
        tcpdump = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    try:
        _beacon(net, path, tcpdump, log, timeout)
        yield path
        _beacon(net, path, tcpdump, log, timeout)
    finally:
        tcpdump.send_signal(signal.SIGINT)  # it closes the file properly
        try:
            tcpdump.wait(timeout)
        except subprocess.TimeoutExpired:
            tcpdump.kill()
            tcpdump.wait(timeout)


def _beacon(net: Network, path: Path, tcpdump: subprocess.Popen, log: Path,
            timeout: float) -> None:
    """Send a unique UDP datagram over the bridge (to the first host's discard port) until
    it shows up in the capture file."""
    payload = f"ppnb-beacon-{uuid.uuid4().hex}".encode()
    target = (next(iter(net.hosts.values())).address, 9)

    def recorded() -> bool:
        if tcpdump.poll() is not None:
            raise RuntimeError(f"tcpdump ended: {log.read_text(errors='replace').strip()}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(payload, target)
        return path.exists() and payload in path.read_bytes()

    if not wait_until(recorded, timeout, interval=0.05):
        raise RuntimeError(f"tcpdump on {net.bridge} recorded nothing in {timeout} s: "
                           f"{log.read_text(errors='replace').strip()}")


def tcp_segments(path: Path) -> list[Segment]:
    """The IPv4 TCP packets of a pcap file of Ethernet frames (as tcpdump -w writes), in
    capture order; other frames are skipped."""
    data = path.read_bytes()
    order = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">"}.get(data[:4])
    if order is None or struct.unpack(order + "I", data[20:24])[0] != 1:  # 1: Ethernet
        raise ValueError(f"{path} is not a microsecond pcap file of Ethernet frames")
    segments, offset = [], 24
    while offset + 16 <= len(data):
        (length,) = struct.unpack(order + "I", data[offset + 8:offset + 12])
        frame = data[offset + 16:offset + 16 + length]
        offset += 16 + length
        if frame[12:14] != b"\x08\x00" or frame[23] != socket.IPPROTO_TCP:  # IPv4, TCP
            continue
        ip_header = (frame[14] & 0x0F) * 4
        (total,) = struct.unpack("!H", frame[16:18])  # 0 for a segmentation-offload giant
        tcp = frame[14 + ip_header:14 + total if total else len(frame)]  # no Ethernet padding
        sport, dport = struct.unpack("!HH", tcp[:4])
        segments.append(Segment(socket.inet_ntoa(frame[26:30]), sport,
                                socket.inet_ntoa(frame[30:34]), dport,
                                tcp[(tcp[12] >> 4) * 4:]))
    return segments


def _pids_in(netns: str) -> list[int]:
    done = ip("netns", "pids", netns, check=False)
    return [int(pid) for pid in done.stdout.split()] if done.returncode == 0 else []


def _link_exists(link: str) -> bool:
    return ip("link", "show", link, check=False).returncode == 0


def _free_subnet() -> ipaddress.IPv4Network:
    """The first candidate subnet that no route or address of the root namespace overlaps."""
    used = []
    for line in ip("-4", "-o", "route", "show", "table", "all").stdout.splitlines():
        destination = line.split()[0]
        if destination in ("default", "broadcast", "local", "unreachable", "blackhole", "prohibit"):
            destination = line.split()[1] if len(line.split()) > 1 else ""
        try:
            used.append(ipaddress.ip_network(destination, strict=False))
        except ValueError:
            continue
    for line in ip("-4", "-o", "addr", "show").stdout.splitlines():
        match = re.search(r"inet (\S+)", line)
        if match:
            used.append(ipaddress.ip_interface(match.group(1)).network)
    for subnet in SUBNETS:
        if not any(subnet.overlaps(other) for other in used if other.prefixlen > 0):
            return subnet
    raise Unavailable("no free 10.213.x.0/24 test subnet")


def _remove_stale() -> None:
    """Remove what an earlier run left when it was killed: its namespaces (and any process
    still in them, which that run started), bridge and veths. Runs are known by their pid."""
    def dead(pid: str) -> bool:
        return not pid_alive(int(pid))

    for line in ip("netns", "list", check=False).stdout.splitlines():
        match = re.match(rf"({PREFIX}-(\d+)-\S+)", line)
        if match and dead(match.group(2)):
            for pid in _pids_in(match.group(1)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            ip("netns", "del", match.group(1), check=False)
    for line in ip("-o", "link", "show", check=False).stdout.splitlines():
        match = re.match(r"\d+:\s+(pp(?:b|\d)(\d+))[:@]", line)
        if match and dead(match.group(2)):
            ip("link", "del", match.group(1), check=False)
