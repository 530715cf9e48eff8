"""Security of a local cluster: loopback only, private connection files, the session key never
shown, and messages not signed with that key never run."""

import json
import shutil
import stat
import sys
import time
from pathlib import Path

import cloudpickle
import ipyparallel as ipp
import psutil
import pytest

import pp_notebook as pp
from pp_notebook.summary import summary_html

from helpers import ipython_shell, watched

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import tests/

LOOPBACK = {"127.0.0.1", "::1"}


def touch(path):
    with open(path, "w") as f:
        f.write("ran")
    return path


def fail_on_two(x):
    if x == 2:
        raise ValueError("two is bad")
    return {"x": x}


def security_dir(cluster) -> Path:
    return Path(cluster.profile_dir) / "security"


def client_file(cluster) -> Path:
    return security_dir(cluster) / f"ipcontroller-{cluster.cluster_id}-client.json"


def session_key(cluster) -> str:
    key = json.loads(client_file(cluster).read_text())["key"]
    assert len(key) >= 16 and cluster.client.session.key == key.encode()
    return key


def cluster_processes(cluster) -> list[psutil.Process]:
    """The controller and its schedulers, the engines and their nannies."""
    cluster.wait_for_info()
    roots = [cluster.controller_pid]
    roots += [e["pid"] for e in pp.status()["engines"]]
    processes = []
    for pid in roots:
        process = psutil.Process(pid)
        processes += [process, *process.children(recursive=True)]
    return processes


def test_a_local_cluster_listens_and_connects_on_loopback_only(cluster):
    connection = json.loads(client_file(cluster).read_text())
    assert connection["interface"] == "tcp://127.0.0.1"
    listening, peers = {}, set()
    for process in cluster_processes(cluster):
        for conn in process.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                listening.setdefault(conn.laddr.ip, []).append((process.pid, conn.laddr.port))
            elif conn.raddr:
                peers.add(conn.raddr.ip)
    controller_ports = {port for ports in listening.values() for _, port in ports}
    assert connection["registration"] in controller_ports  # the sockets were really seen
    assert set(listening) <= LOOPBACK, listening
    assert peers and peers <= LOOPBACK, peers


def test_connection_files_are_readable_by_their_owner_only(cluster):
    key = session_key(cluster)
    directory = security_dir(cluster)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for kind in ("client", "engine"):
        path = directory / f"ipcontroller-{cluster.cluster_id}-{kind}.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert json.loads(path.read_text())["key"] == key
    # the cluster's other files (its state file, its logs) are not secret: no key in them
    others = [p for p in directory.iterdir() if cluster.cluster_id in p.name
              and not p.name.startswith("ipcontroller-")]
    others += [p for p in (directory.parent / "log").glob(f"*{cluster.cluster_id}*")]
    assert others
    for path in others:
        assert key not in path.read_text(errors="replace"), path


def test_the_session_key_is_never_shown(cluster, capsys):
    key = session_key(cluster)
    run = pp.map(fail_on_two, range(6))
    dashboard = watched(run)
    summary = run.summary()
    shown = {
        "repr(cluster)": repr(cluster), "repr(ipp cluster)": repr(cluster.cluster),
        "repr(run)": repr(run), "status()": str(pp.status()),
        "summary": str(summary), "summary html": summary_html(summary),
        "result": run.result().to_string(), "errors": run.errors().to_string(),
        "widget state": json.dumps(dashboard.widget.get_state(), default=str),
        "dashboard bundle": json.dumps(dashboard.bundle(), default=str),
    }
    with ipython_shell() as shell:
        capsys.readouterr()
        shell.run_line_magic("pp", "status")
        shown["%pp status"] = capsys.readouterr().out
    # each text is the real thing, with the cluster's and the run's details in it
    assert cluster.cluster_id in shown["%pp status"] and "two is bad" in shown["errors"]
    assert "Per engine" in shown["summary html"] and "5 ok" in shown["dashboard bundle"]
    assert "two is bad" in shown["widget state"]
    for where, text in shown.items():
        for form in (key, key.replace("-", ""), repr(key.encode())):
            assert form not in text, f"the session key appears in {where}"


def test_a_client_with_a_wrong_key_cannot_connect(cluster, tmp_path):
    connection = json.loads(client_file(cluster).read_text())
    connection["key"] = "0" * len(connection["key"])
    forged = tmp_path / "forged-client.json"
    forged.write_text(json.dumps(connection))
    started = time.monotonic()
    with pytest.raises((ipp.error.TimeoutError, TimeoutError, OSError)):
        client = ipp.Client(str(forged), timeout=3)
        client.close()
    assert time.monotonic() - started < 15


def test_work_signed_with_a_wrong_key_never_runs(cluster, tmp_path):
    copy = tmp_path / "client.json"
    shutil.copy(client_file(cluster), copy)
    client = ipp.Client(str(copy), timeout=10)
    try:
        # control: the same submission with the right key runs on every engine
        done = client[:].apply_async(touch, str(tmp_path / "signed")).get(timeout=10)
        assert len(done) == len(cluster.live_ids()) and (tmp_path / "signed").exists()
        client.session.key = b"0" * len(client.session.key)  # the messages' HMAC is now wrong
        direct = client[:].apply_async(touch, str(tmp_path / "direct"))
        balanced = client.load_balanced_view().apply_async(touch, str(tmp_path / "balanced"))
        assert not direct.wait(3) and not balanced.wait(0.5)
        assert not (tmp_path / "direct").exists() and not (tmp_path / "balanced").exists()
    finally:
        client.close()
    # the controller dropped the forged messages and serves its own client as before
    run = pp.map(lambda x: x + 1, range(8))
    assert run.wait(30) and [r.value for r in run.records] == list(range(1, 9))
    assert not (tmp_path / "direct").exists() and not (tmp_path / "balanced").exists()
