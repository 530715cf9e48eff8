"""An engine that does not register within the cluster's deadline is given up: stopped,
logged and listed as not granted, never waited for; the cluster goes on with what it has."""

import time

import pp_notebook as pp
from pp_notebook.magic import cluster_status_text


def test_an_engine_too_slow_to_register_is_given_up_and_the_cluster_goes_on(own_cluster,
                                                                             caplog):
    pp.start(1)
    handle = pp.cluster.current()
    handle.register_timeout = 0.05  # no engine registers that fast: the next one is given up
    started = time.monotonic()
    handle.add_engines(1)  # waits until it registered or was given up
    assert time.monotonic() - started < 10
    status = pp.status()
    (refused,) = status["not_granted"]
    assert "did not register within 0 s: stopped" in refused["reason"], refused
    assert len(status["engines"]) == 1 and status["waiting"] == 0
    assert "not granted: an engine did not register" in cluster_status_text(status)
    assert "did not register" in caplog.text  # logged
    df = pp.map(abs, range(-3, 3)).result()
    assert (df["status"] == "ok").all() and list(df["result"]) == [3, 2, 1, 0, 1, 2]
