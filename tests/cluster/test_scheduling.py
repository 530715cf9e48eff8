"""Many tasks at once per engine (concurrency), async tasks, and speculative backups."""

import asyncio
import time

import pp_notebook as pp


def overlap(records) -> int:
    """The most tasks that ran at the same moment on one engine."""
    most = 0
    for engine in {r.engine for r in records}:
        edges = sorted(e for r in records if r.engine == engine
                       for e in ((r.started, 1), (r.started + r.duration_s, -1)))
        running = 0
        for _, step in edges:
            running += step
            most = max(most, running)
    return most


def test_concurrency_runs_many_waiting_tasks_at_once_on_each_engine(cluster):
    def wait_io(x):
        time.sleep(0.2)
        print(f"item {x}")
        return x

    run = pp.map(wait_io, range(200), concurrency=32)
    assert run.wait(60)
    df = run.result()
    assert list(df["result"]) == list(range(200)) and (df["status"] == "ok").all()
    assert overlap(run.records) >= 16
    assert [r.output for r in run.records[:3]] == ["item 0\n", "item 1\n", "item 2\n"]


def test_a_runaway_task_among_concurrent_ones_times_out_alone(cluster):
    def task(x):
        if x == 3:
            while True:
                pass
        time.sleep(0.05)
        return x

    run = pp.map(task, range(40), concurrency=8, timeout=1)
    assert run.wait(60)
    statuses = [r.status for r in run.records]
    assert statuses[3] == "timeout" and statuses.count("ok") == 39
    assert "time limit of 1 s" in run.records[3].error


def test_async_tasks_are_awaited(cluster):
    async def fetch(x):
        await asyncio.sleep(0.01)
        return {"x": x, "double": 2 * x}

    run = pp.map(fetch, range(20), concurrency=4)
    assert run.wait(60)
    assert list(run.result()["double"]) == [2 * x for x in range(20)]


def test_speculate_backs_up_a_straggler_and_the_first_copy_wins(cluster, tmp_path):
    def sometimes_stuck(x):
        marker = tmp_path / f"started-{x}"
        if x == 199 and not marker.exists():  # only the first attempt of the last item hangs
            marker.touch()
            time.sleep(60)
        time.sleep(0.002)
        return x

    run = pp.map(sometimes_stuck, range(200), speculate=True)
    assert run.wait(60)
    assert run.elapsed_s < 30  # the backup finished: nobody waited for the stuck copy
    df = run.result()
    assert list(df["result"]) == list(range(200)) and (df["status"] == "ok").all()
    assert (df["attempts"] == 1).all()  # the losing copy is not counted


def test_a_thread_blocked_past_its_timeout_costs_its_engine_but_nothing_else(cluster):
    def task(x):
        time.sleep(30 if x == 0 else 0.05)  # one long C call: no instruction to raise at
        return x

    run = pp.map(task, range(12), concurrency=4, timeout=1)
    assert run.wait(90)
    assert run.records[0].status == "timeout" and run.elapsed_s < 30
    assert [r.value for r in run.records[1:]] == list(range(1, 12))
    assert all(r.status == "ok" for r in run.records[1:])
