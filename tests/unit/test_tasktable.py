"""The run's columnar bookkeeping: a task's fields in and out, the records view over them, the
queue's order, and what a task costs."""

import tracemalloc

import numpy as np
import pytest

from pp_notebook.records import Records, TaskRecord, table_of
from pp_notebook.tasktable import STATUSES, TaskQueue, TaskTable

ENDED = {"status": "error", "value": [1], "error_type": "ValueError", "error": "boom",
         "traceback": "Traceback ...", "output": "printed\n", "engine": 3, "host": "node-2",
         "pid": 4321, "started": 1.7e9, "duration_s": 0.25, "attempts": 2, "resumed": True}


def test_a_new_table_is_all_pending_with_nothing_known():
    table = TaskTable(["a", "b"])
    assert TaskRecord(**table.fields(1)) == TaskRecord(1, "b")
    assert table.status_of(0) == "pending" and table.is_pending(1)
    assert not table.errors and not table.tracebacks and not table.outputs


def test_every_field_written_reads_back_as_plain_python_values():
    table = TaskTable(list(range(3)))
    table.update(1, **ENDED)
    fields = table.fields(1)
    assert fields == {"task": 1, "item": 1, **ENDED}
    assert type(fields["engine"]) is int and type(fields["duration_s"]) is float
    assert table.fields(-2) == fields  # negative positions count from the end
    assert TaskRecord(**table.fields(0)) == TaskRecord(0, 0)
    with pytest.raises(IndexError):
        table.fields(3)
    with pytest.raises(TypeError, match="no field 'colour'"):
        table.update(0, colour="red")


def test_unknown_values_are_none_again_and_sparse_columns_forget_them():
    table = TaskTable([0])
    table.update(0, **ENDED)
    table.update(0, engine=None, host=None, pid=None, started=None, duration_s=None,
                 output="", traceback=None, error_type=None, error=None)
    fields = table.fields(0)
    assert [fields[name] for name in ("engine", "host", "pid", "started", "duration_s",
                                      "traceback", "error_type", "error")] == [None] * 8
    assert fields["output"] == "" and not table.errors and not table.tracebacks \
        and not table.outputs


def test_an_empty_message_is_still_an_error():
    table = TaskTable([0])
    table.set_error(0, None, "", None)
    assert table.error_of(0) == (None, "")


def test_hosts_are_codes_into_one_short_list():
    table = TaskTable(list(range(1000)))
    for task in range(1000):
        table.update(task, host=f"node-{task % 3}")
    assert table.hosts == ["node-0", "node-1", "node-2"]
    assert table.host.dtype.itemsize <= 2 and table.fields(4)["host"] == "node-1"
    assert list(table.host_names()[:4]) == ["node-0", "node-1", "node-2", "node-0"]


def test_failed_tasks_are_those_that_ran_and_did_not_succeed_not_cancelled_ones():
    table = TaskTable(list(STATUSES))
    for task, status in enumerate(STATUSES):
        table.set_status(task, status)
    assert [STATUSES[t] for t in np.flatnonzero(table.failed())] == \
        ["error", "timeout", "memory", "invalid", "lost"]


def test_records_are_a_read_only_view_built_on_demand():
    table = TaskTable(["x", "y", "z"])
    table.update(2, **ENDED)
    records = Records(table)
    assert len(records) == 3 and records[2] == TaskRecord(2, "z", **ENDED)
    assert records[-1] == records[2] and [r.task for r in records[1:]] == [1, 2]
    assert [r.item for r in records] == ["x", "y", "z"]
    copy = records[0]
    copy.status = "ok"  # a copy: the table does not change
    assert records[0].status == "pending"
    with pytest.raises(IndexError):
        records[3]
    assert table_of(records) is table


def test_a_table_from_records_needs_their_tasks_in_order():
    assert table_of([TaskRecord(0, "a", **ENDED)]).fields(0) == {"task": 0, "item": "a",
                                                                 **ENDED}
    with pytest.raises(ValueError, match="record 0 is task 5"):
        table_of([TaskRecord(5, "a")])


def test_the_queue_sends_requeued_tasks_first_then_new_ones_then_retries():
    queue = TaskQueue(np.arange(5))
    assert queue.popleft() == 0 and queue.popleft() == 1
    queue.push_back([9])
    queue.push_front([7, 8])
    assert len(queue) == 6 and queue.peek() == 7
    assert list(queue) == [7, 8, 2, 3, 4, 9]
    assert queue.take(10) == [7, 8, 2, 3, 4, 9] and not queue
    with pytest.raises(IndexError):
        queue.popleft()


def test_a_batch_takes_up_to_its_size_and_a_task_to_run_alone_goes_by_itself():
    queue = TaskQueue(np.arange(10))
    assert queue.take(3) == [0, 1, 2]
    assert queue.take(4, alone={5}) == [3, 4]  # ends before it
    assert queue.take(4, alone={5}) == [5]  # taken first: alone
    queue.push_front([20, 21])
    assert queue.take(4, alone={21}) == [20]
    assert queue.take(4, alone={21}) == [21]
    assert queue.take(100) == [6, 7, 8, 9]


def test_clearing_the_queue_drops_every_part():
    queue = TaskQueue(np.arange(4))
    queue.push_front([8])
    queue.push_back([9])
    queue.clear()
    assert len(queue) == 0 and list(queue) == []


def test_a_task_costs_under_53_bytes_beside_its_items_and_results_own_objects():
    items = list(range(100_000))
    tracemalloc.start()
    try:
        table = TaskTable(items)
        queue = TaskQueue(np.flatnonzero(table.status == 0))
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(queue) == len(items)
    # 32 bytes in typed columns, 8 an item's slot, 8 a value's, 4 its place in the queue
    assert held / len(items) <= 53, held / len(items)


def test_a_ranges_items_are_an_int_column_and_come_back_as_python_ints():
    table = TaskTable(range(5, 25, 5))
    assert table.items.dtype == np.int64 and table.items.tolist() == [5, 10, 15, 20]
    assert type(table.item(1)) is int and table.fields(-1)["item"] == 20
    assert TaskTable(range(0)).items.dtype == object  # nothing to store
    assert TaskTable([1, 2]).items.dtype == object  # a list's items stay as they are
    big = TaskTable(range(2 ** 64, 2 ** 64 + 2))
    assert big.items.dtype == object and big.item(1) == 2 ** 64 + 1
