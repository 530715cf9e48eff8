"""Beyond one machine: a controller and engines on separate hosts, on one machine.

Each host is a network namespace with its own address and hostname (tests/netns.py); an
`ipcontroller` runs in "ctl", one `ipengine` in each of "hostA" and "hostB", and this process
(the root namespace) connects with `pp_notebook.connect(connection_file=...)` over the test
bridge, as a notebook would connect to a cluster started by `ipcluster` on other machines.
hostA plays a machine where pp_notebook is not installed (its engine cannot import it, so the
client's bootstrap ships pp_notebook/engine.py); hostB's clock runs an hour ahead
(libfaketime) when libfaketime is installed.

Needs root and iproute2; skipped, with the reason, where namespaces cannot be made.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pytest

import pp_notebook as pp
from pp_notebook import cluster as cluster_module
from pp_notebook.cluster import handle as handle_module
from pp_notebook.cluster import transport

import netns
from helpers import ipython_shell, pid_alive, wait_until

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import tests/

CLUSTER_START_S = 30.0
SKEW_S = 3600.0
FAKETIME_LIBS = ["/usr/lib/*/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1",
                 "/usr/local/lib/faketime/libfaketime.so.1"]
# A task that lasted longer than this did not run in these tests: a wrong clock, not a task.
ABSURD_S = 30.0
# ipengine, on a host where `import pp_notebook` fails (as where it is not installed).
ENGINE_WITHOUT_PP_NOTEBOOK = """
import sys


class NoPpNotebook:
    def find_spec(self, name, path=None, target=None):
        if name == "pp_notebook" or name.startswith("pp_notebook."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, NoPpNotebook())
sys.argv[0] = "ipengine"
from ipyparallel.engine.app import main
main()
"""


FAKETIME_SHM = "/dev/shm/*faketime_s*"  # its shared memory and semaphores


def _faketime_lib() -> str | None:
    for pattern in FAKETIME_LIBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


ENGINE_HOSTS = ("hostA", "hostB")


@dataclass
class Controller:
    """An ipcontroller running in "ctl", and what engines and clients need to join it."""

    process: netns.Process
    client_file: Path
    engine_file: Path
    engine_args: list[str]  # ipengine's arguments that point it at this controller
    encrypted: bool  # its connection files carry a CurveZMQ server key


class Hosts:
    """The running multi-host cluster: the network, its processes, and engine ids by host."""

    def __init__(self, net: netns.Network) -> None:
        self.net = net
        self.env = {**os.environ, "IPYTHONDIR": str(net.workdir / "ipython"),
                    "PYTHONUNBUFFERED": "1"}
        self.controller: Controller | None = None
        self.engines = {}  # hostname -> netns.Process
        self.engine_command = {}  # hostname -> (argv, env) that started its engine
        self.engine_id = {}  # hostname -> ipyparallel engine id
        self.skewed = None  # the hostname whose clock runs SKEW_S ahead, if any
        self.client_file = None

    def logs(self) -> str:
        """The end of the log of every process started on the network."""
        return "\n".join(f"--- {process.log.name} ---\n{process.log_tail()}"
                         for process in self.net.processes)


def start_controller(hosts: Hosts, label: str, encrypt: bool | None = None) -> Controller:
    """Start an ipcontroller in "ctl" on its bridge address, with pp_notebook's fast settings
    and its CurveZMQ setting for that address (`transport.encryption_args`: on by default
    beyond loopback); return once it has written its connection files."""
    net, ctl = hosts.net, hosts.net.hosts["ctl"]
    profile = net.workdir / f"profile-{label}"
    cluster_id = f"{label}-{net.tag}"
    process = net.start(ctl, [
        sys.executable, "-m", "ipyparallel.controller", f"--profile-dir={profile}",
        f"--cluster-id={cluster_id}", f"--ip={ctl.address}", f"--location={ctl.address}",
        *handle_module.controller_args(2), *transport.encryption_args(ctl.address, encrypt)],
        env=hosts.env, log_name=f"ipcontroller-{label}.log")
    security = profile / "security"
    engine_file = security / f"ipcontroller-{cluster_id}-engine.json"
    client_file = security / f"ipcontroller-{cluster_id}-client.json"
    if not wait_until(lambda: client_file.exists() and engine_file.exists()
                          and process.popen.poll() is None, CLUSTER_START_S):
        pytest.fail(f"the controller wrote no connection files\n{hosts.logs()}")
    time.sleep(0.05)  # the files are written whole, but give the writer its close()
    connection = json.loads(engine_file.read_text())
    assert connection["interface"] == f"tcp://{ctl.address}", connection
    return Controller(process, client_file, engine_file,
                      [f"--file={engine_file}", f"--profile-dir={profile}",
                       f"--cluster-id={cluster_id}"],
                      encrypted=connection.get("curve_serverkey") is not None)


def connect(hosts: Hosts, controller: Controller) -> dict[str, int]:
    """Make `controller`'s cluster the session's (`pp.connect`, as a notebook would) and wait
    until an engine from each engine host has joined; returns their engine ids by host."""
    pp.connect(connection_file=str(controller.client_file), timeout=10)
    handle = cluster_module.current(start_if_missing=False)

    def joined():
        handle.wait_for_info(1.0)
        return {info.host for info in handle.refresh().values()} == set(ENGINE_HOSTS)

    if not wait_until(joined, CLUSTER_START_S, interval=0.1):
        pytest.fail(f"engines did not register from both hosts: {pp.status()}\n{hosts.logs()}")
    return {info.host: eid for eid, info in handle.engines.items()}


@pytest.fixture(scope="module")
def hosts(request):
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(reason)
    for stale in Path(tempfile.gettempdir()).glob("pp_notebook-multihost-*-*"):
        if not pid_alive(int(stale.name.split("-")[2])):  # a killed run's logs
            shutil.rmtree(stale, ignore_errors=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"pp_notebook-multihost-{os.getpid()}-"))
    net = netns.Network(workdir)
    hosts = Hosts(net)
    saved = {}
    faketime_before = set(glob.glob(FAKETIME_SHM))

    def finish():
        # Disconnect from this cluster and give the session back the cluster it had.
        if "current" in saved:
            mine = cluster_module.swap(saved["current"])
            if mine is not None and mine is not saved["current"]:
                mine.shutdown()
        problems = net.close()
        shutil.rmtree(workdir, ignore_errors=True)
        for left in set(glob.glob(FAKETIME_SHM)) - faketime_before:  # libfaketime's segments
            Path(left).unlink(missing_ok=True)  # of the skewed engine, killed with its host
        assert not problems, f"cleanup left: {problems}"

    request.addfinalizer(finish)
    try:
        net.create(["ctl", *ENGINE_HOSTS])
    except netns.Unavailable as exc:
        pytest.skip(str(exc))

    hosts.controller = start_controller(hosts, "multihost")  # pp_notebook's default: curve on
    hosts.client_file = hosts.controller.client_file
    blocked = _unreachable(net, json.loads(hosts.controller.engine_file.read_text()))
    if blocked:
        pytest.skip(f"traffic between namespaces over the bridge is blocked here ({blocked}); "
                    "br_netfilter with a DROP forward policy does this")

    faketime = _faketime_lib()
    for name in ENGINE_HOSTS:
        engine_env = dict(hosts.env)
        if name == "hostB" and faketime:
            hosts.skewed = name
            # Its monotonic clock moves too: libfaketime 0.9.10 with
            # FAKETIME_DONT_FAKE_MONOTONIC=1 makes time.sleep() fail with EINVAL.
            engine_env.update(LD_PRELOAD=faketime, FAKETIME=f"+{SKEW_S:.0f}")
        start = ([sys.executable, "-c", ENGINE_WITHOUT_PP_NOTEBOOK] if name == "hostA"
                 else [sys.executable, "-m", "ipyparallel.engine"])
        argv = [*start, *hosts.controller.engine_args]
        hosts.engine_command[name] = (argv, engine_env)
        hosts.engines[name] = net.start(net.hosts[name], argv, env=engine_env,
                                        log_name=f"ipengine-{name}.log")

    saved["current"] = cluster_module.swap(None)  # keep the session's cluster: connect() would
    # stop it
    hosts.engine_id = connect(hosts, hosts.controller)
    return hosts


@pytest.fixture(params=[None, False], ids=["default", "encrypt=False"])
def wire(request, hosts) -> Controller:
    """The session's cluster across the bridge, by `encrypt`: None is the module's cluster
    (pp_notebook's default beyond loopback); False a second controller started with the
    documented opt-out, with an engine on each engine host, stopped (and the module's cluster
    made the session's again) when the test ends."""
    if request.param is None:
        return hosts.controller
    net, started_before = hosts.net, len(hosts.net.processes)
    module_cluster = cluster_module.swap(None)

    def finish():
        mine = cluster_module.swap(module_cluster)
        if mine is not None:
            mine.shutdown()  # disconnects; its processes end next
        net.stop(net.processes[started_before:])

    request.addfinalizer(finish)
    controller = start_controller(hosts, "plaintext", encrypt=request.param)
    for name in ENGINE_HOSTS:
        net.start(net.hosts[name], [sys.executable, "-m", "ipyparallel.engine",
                                    *controller.engine_args],
                  env=hosts.env, log_name=f"ipengine-{name}-plaintext.log")
    connect(hosts, controller)
    return controller


def _unreachable(net: netns.Network, connection: dict) -> str | None:
    """Probe the controller's registration port from each engine host: None when reachable."""
    address = (net.hosts["ctl"].address, connection["registration"])
    probe = f"import socket; socket.create_connection({address!r}, timeout=3).close()"
    for name in ("hostA", "hostB"):
        done = net.run(net.hosts[name], [sys.executable, "-c", probe])
        if done.returncode:
            return f"{name} -> ctl: {done.stderr.strip().splitlines()[-1]}"
    return None


@pytest.fixture(scope="module")
def ip(hosts):
    """A real IPython shell with the extension loaded, whose cluster is the multi-host one."""
    with ipython_shell() as shell:
        yield shell


def assert_on_client_timeline(run: pp.Run) -> None:
    """Durations are sane and every start lies in the run's wall interval, client clock."""
    begin, end = run.started_at, run.started_at + run.elapsed_s
    slack = 0.01  # time.time() and time.monotonic() are read a few µs apart
    for record in run.records:
        assert 0 <= record.duration_s < ABSURD_S, (record.task, record.host, record.duration_s)
        assert begin - slack <= record.started <= end + slack, (
            f"task {record.task} on {record.host} started {record.started - begin:+.3f} s "
            f"from the run's start; the run lasted {run.elapsed_s:.3f} s")
        assert record.started + record.duration_s <= end + slack
    for attempt in run.snapshot().marks:
        assert -slack <= attempt.start_s <= run.elapsed_s + slack


# -- tests ----------------------------------------------------------------------------------

def test_a_parallel_cell_runs_on_both_hosts(hosts, ip, capsys):
    ip.run_line_magic("pp", f"connect --file {hosts.client_file}")  # as a notebook would
    shown = capsys.readouterr().out
    assert "(connected): 2 engines" in shown and "on hostA" in shown and "on hostB" in shown
    ip.user_ns["offset"] = 1000
    df = ip.run_cell_magic(
        "parallel", "x in range(40) --quiet",
        "import socket, time\ntime.sleep(0.02)\n"
        "{'y': x * x + offset, 'ran_on': socket.gethostname()}")
    assert list(df.index) == list(range(40))
    assert (df["status"] == "ok").all(), df[df["status"] != "ok"]
    assert list(df["y"]) == [x * x + 1000 for x in range(40)]
    assert set(df["host"]) == {"hostA", "hostB"}
    assert (df["host"] == df["ran_on"]).all()  # the record's host is where the task ran
    assert set(df["engine"]) == set(hosts.engine_id.values())
    run = pp.last_run()
    by_host = {}
    for record in run.records:
        by_host.setdefault(record.host, set()).add((record.engine, record.pid))
    assert {h: len(v) for h, v in by_host.items()} == {"hostA": 1, "hostB": 1}, by_host
    for host, ((engine, pid),) in by_host.items():
        assert engine == hosts.engine_id[host] and pid
    assert_on_client_timeline(run)
    # hostA ran the shipped copy of pp_notebook/engine.py; hostB its installed package
    handle = cluster_module.current(start_if_missing=False)
    origin = {host: handle.client[eid].apply_sync(_pp_notebook_origin)
              for host, eid in hosts.engine_id.items()}
    assert origin["hostA"] == (None, "pp_notebook/engine.py")
    assert origin["hostB"][0].endswith("__init__.py")
    status = pp.status()
    assert status["local"] is False and {e["host"] for e in status["engines"]} == {"hostA", "hostB"}


def test_tasks_and_results_cross_the_network_encrypted_unless_opted_out(hosts, wire, tmp_path):
    # Proven on the wire: tcpdump records the bridge while a run's items and results, each
    # holding a unique marker, travel client -> controller -> engines and back. Encrypted
    # (the default beyond loopback), the marker is nowhere in the recording; with the opt-out
    # it is there, on its way to the engine hosts and back from them.
    assert wire.encrypted is (wire is hosts.controller)  # the controller took the setting
    marker = f"pp-notebook-marker-{uuid.uuid4().hex}"
    items = [f"{marker}/{k}" for k in range(6)]
    with netns.capture(hosts.net, tmp_path / "bridge.pcap") as recording:
        df = pp.map(_echo, items, batch=1).result()
    assert (df["status"] == "ok").all(), df[df["status"] != "ok"]
    assert list(df["result"]) == [f"{item} on {host}" for item, host in zip(items, df["host"])]
    assert set(df["host"]) == set(ENGINE_HOSTS)

    engines = {hosts.net.hosts[name].address for name in ENGINE_HOSTS}
    flows: dict[tuple, bytes] = {}  # (src, sport, dst, dport) -> its payload, in order
    segments = [segment for segment in netns.tcp_segments(recording) if segment.payload]
    for segment in segments:
        key = (segment.src, segment.sport, segment.dst, segment.dport)
        flows[key] = flows.get(key, b"") + segment.payload
    packets_to = Counter(segment.dst for segment in segments)
    print(f"\n{'curve' if wire.encrypted else 'plaintext'}: {sum(map(len, flows.values()))} "
          f"bytes of TCP payload on the bridge; packets with data to: {dict(packets_to)}")
    assert engines <= set(packets_to), f"nothing recorded to both engine hosts: {packets_to}"
    with_marker = {(src, dst) for (src, _, dst, _), payload in flows.items()
                   if marker.encode() in payload}
    if wire.encrypted:
        assert not with_marker and marker.encode() not in recording.read_bytes(), with_marker
    else:  # the opt-out: tasks reach the engines and results leave them readable
        assert {dst for _, dst in with_marker} & engines, with_marker
        assert {src for src, _ in with_marker} & engines, with_marker


def test_an_engine_an_hour_ahead_keeps_records_on_the_client_clock(hosts):
    if hosts.skewed is None:
        pytest.skip("libfaketime is not installed (Debian package `libfaketime`): cannot skew "
                    "an engine's clock")
    handle = cluster_module.current(start_if_missing=False)
    skewed = hosts.engine_id[hosts.skewed]
    engine_now = handle.client[skewed].apply_sync(time.time)
    assert abs(engine_now - time.time() - SKEW_S) < 60, "the engine's clock is not skewed"

    run = pp.map(_nap, range(30))
    assert run.wait(60)
    df = run.result()
    assert (df["status"] == "ok").all() and list(df["result"]) == list(range(30))
    on_skewed = [r for r in run.records if r.engine == skewed]
    assert on_skewed and len(on_skewed) < 30  # both engines took part
    for record in run.records:
        assert 0.045 <= record.duration_s < 1.0, (record.host, record.duration_s)
    assert_on_client_timeline(run)
    assert run.summary() is not None  # summaries and timelines take the corrected times


def _sent_to(host: netns.Host) -> int:
    """Bytes the bridge has sent into `host` so far (its root-side veth's transmit count)."""
    return int(Path(f"/sys/class/net/{host.veth_root}/statistics/tx_bytes").read_text())


def test_two_engines_of_a_host_receive_a_shared_frame_once(hosts):
    net, handle = hosts.net, cluster_module.current(start_if_missing=False)
    argv, env = hosts.engine_command["hostA"]
    second = net.start(net.hosts["hostA"], argv, env=env, log_name="ipengine-hostA-2.log")
    try:
        def on_host_a():
            handle.wait_for_info(1.0)
            return [eid for eid, info in handle.refresh().items() if info.host == "hostA"]

        assert wait_until(lambda: len(on_host_a()) == 2, CLUSTER_START_S, interval=0.1), \
            hosts.logs()
        frame = pd.DataFrame({"x": np.arange(2_500_000, dtype=float)})  # 20 MB
        before = _sent_to(net.hosts["hostA"])
        run = pp.map(lambda k: float(frame.x.iloc[k]), range(60), batch=1)
        result = run.result()
        sent = _sent_to(net.hosts["hostA"]) - before
        assert list(result["result"]) == [float(k) for k in range(60)]
        assert set(on_host_a()) <= set(result["engine"])  # both of hostA's engines used it
        (shipment,) = run.summary().shipments
        assert shipment.hosts == 2  # hostA and hostB, once each
        print(f"\nhostA's link carried {sent / 1e6:.1f} MB for a {frame['x'].nbytes / 1e6:.1f} MB "
              "frame used by its 2 engines")
        assert frame["x"].nbytes <= sent < 1.5 * frame["x"].nbytes, sent
    finally:
        _end(second)
        pp.forget()
        # the controller notices the ended engine by its heartbeat: wait, for the next tests
        assert wait_until(lambda: len(on_host_a()) == 1, CLUSTER_START_S, interval=0.1)


def test_cutting_a_hosts_link_moves_its_tasks_to_the_other_host(hosts):
    handle = cluster_module.current(start_if_missing=False)
    cut, other = hosts.engine_id["hostA"], hosts.engine_id["hostB"]
    assert set(handle.live_ids()) == {cut, other}
    run = pp.map(_slow_square, range(60), retries=1)

    def engine(eid):
        return next((e for e in run.snapshot().engines if e.id == eid), None)

    try:
        # cut while hostA's task has >= 0.1 s to run: it cannot finish there before the cut
        assert wait_until(lambda: (engine(cut) is not None and engine(cut).done >= 3
                                       and engine(cut).running_for_s is not None
                                       and engine(cut).running_for_s < 0.1), 20)
        done_before, in_flight = engine(cut).done, engine(cut).running_task
        cut_at = time.monotonic()
        hosts.net.set_link(hosts.net.hosts["hostA"], up=False)
        noticed = wait_until(lambda: engine(cut).state == "dead", 30, interval=0.01)
        noticed_after = time.monotonic() - cut_at
        left_after = (time.monotonic() - cut_at
                      if wait_until(lambda: cut not in handle.live_ids(), 10) else None)
        print(f"\nlink of hostA cut {run.elapsed_s - noticed_after:.2f} s into the run, after "
              f"{done_before} of its tasks; the Run marked engine {cut} dead (requeued its "
              f"in-flight tasks) {noticed_after:.2f} s later; it left client.ids after "
              f"{left_after if left_after is None else round(left_after, 2)} s")
        assert noticed, f"the Run never noticed the cut: {run.snapshot()}"
        assert run.wait(60), run
    finally:
        hosts.net.set_link(hosts.net.hosts["hostA"], up=True)
        _restart_engine(hosts, "hostA")  # the other tests, in any order, find two hosts

    df = run.result()
    assert list(df.index) == list(range(60))  # one row per item
    assert (df["status"] == "ok").all(), df[df["status"] != "ok"]
    assert list(df["result"]) == [x * x for x in range(60)]
    on_a = df[df["host"] == "hostA"]
    assert len(on_a) == done_before  # what hostA finished before the cut, nothing after
    assert df.loc[in_flight, "host"] == "hostB"  # hostA's running task moved to hostB
    assert (df["engine"] == other).sum() == 60 - len(on_a)
    # Nothing was charged twice: an item has one attempt, or two when hostA held it alone
    # (then it counts as the likely cause of its engine's loss, and retries=1 runs it again).
    charged = df[df["attempts"] > 1]
    assert (df["attempts"] <= 2).all() and set(charged.index) <= {in_flight}, charged
    assert_on_client_timeline(run)
    assert engine(cut).state == "dead" and engine(other).state != "dead"


def _end(process: netns.Process) -> None:
    """End one engine started in a host's namespace (its `unshare` takes its children along);
    the host's other processes go on."""
    process.popen.kill()
    process.popen.wait(10)


def _restart_engine(hosts: Hosts, name: str) -> None:
    """End `name`'s engine process and start a fresh one there; wait until it has joined."""
    net, handle = hosts.net, cluster_module.current(start_if_missing=False)
    _end(hosts.engines[name])
    argv, env = hosts.engine_command[name]
    hosts.engines[name] = net.start(net.hosts[name], argv, env=env,
                                    log_name=f"ipengine-{name}-again.log")

    def joined():
        handle.wait_for_info(1.0)
        return [eid for eid, info in handle.refresh().items() if info.host == name]

    assert wait_until(lambda: len(joined()) == 1, CLUSTER_START_S, interval=0.1), hosts.logs()
    hosts.engine_id[name] = joined()[0]


def _pp_notebook_origin():
    package, engine = sys.modules["pp_notebook"], sys.modules["pp_notebook.engine"]
    return getattr(package, "__file__", None), engine.run_batch.__code__.co_filename


def _echo(item):
    import socket
    time.sleep(0.02)
    return f"{item} on {socket.gethostname()}"


def _nap(x):
    time.sleep(0.05)
    return x


def _slow_square(x):
    time.sleep(0.2)
    return x * x
