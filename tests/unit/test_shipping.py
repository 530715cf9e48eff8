"""Values that hold state of this process are refused before anything runs, in one message form;
a shipped random generator is warned of."""

import io
import mmap
import multiprocessing
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading

import numpy as np
import pytest

import pp_notebook as pp
from pp_notebook.cell import compile_cell, evaluate_iterable, parse_header
from pp_notebook.errors import CellError


def _generator():
    yield 1


async def _coroutine():
    return 1


@pytest.fixture
def local_state(tmp_path):
    """One live object of each process-local kind, closed at the end."""
    path = tmp_path / "data.txt"
    path.write_text("line one\nline two\n")
    reader = open(path)  # a read-mode handle: cloudpickle would happily copy it
    sock = socket.socket()
    connection = sqlite3.connect(":memory:")
    popen = subprocess.Popen([sys.executable, "-c", "pass"])
    mapped = mmap.mmap(-1, 16)
    coroutine = _coroutine()
    objects = {
        "reader": (reader, "an open file or stream", "TextIOWrapper"),
        "buffer": (io.BytesIO(b"x"), "an open file or stream", "BytesIO"),
        "sock": (sock, "a socket", "socket"),
        "gen": (_generator(), "a generator", "generator"),
        "coro": (coroutine, "a coroutine", "coroutine"),
        "event": (threading.Event(), "a threading primitive", "Event"),
        "lock": (threading.Lock(), "a threading primitive", "lock"),
        "mp_lock": (multiprocessing.Lock(), "a multiprocessing primitive", "Lock"),
        "db": (connection, "a database connection", "Connection"),
        "child": (popen, "a subprocess handle", "Popen"),
        "mapped": (mapped, "a memory map", "mmap"),
    }
    yield objects
    reader.close()
    sock.close()
    connection.close()
    popen.wait()
    mapped.close()
    coroutine.close()


KINDS = ["reader", "buffer", "sock", "gen", "coro", "event", "lock", "mp_lock", "db", "child",
         "mapped"]


@pytest.mark.parametrize("name", KINDS)
def test_a_cell_reading_process_local_state_is_refused_in_one_message_form(local_state, name):
    value, what, type_name = local_state[name]
    header = parse_header("x in range(3)")
    with pytest.raises(CellError) as error:
        compile_cell(header, f"y = x\nstr({name})", {name: value})
    message = str(error.value)
    assert message.startswith(f"cannot send to the engines: `{name}` (line 3, {type_name}) "
                              f"is {what}: it holds state of this process")
    assert "results would depend on scheduling" in message
    assert message.endswith("Create it inside the cell instead (open the file, the connection "
                            "or the lock there); nothing was run")


def test_process_local_state_inside_a_container_is_refused_too(local_state):
    header = parse_header("x in range(3)")
    with pytest.raises(CellError, match=r"`config` \(line 2, TextIOWrapper\) is an open file"):
        compile_cell(header, "config['log']", {"config": {"log": local_state["reader"][0]}})


@pytest.mark.parametrize("name", ["reader", "lock", "db"])
def test_a_map_function_capturing_process_local_state_is_refused(local_state, name):
    value, what, _ = local_state[name]
    scope = {name: value}
    task = eval(f"lambda x: ({name}, x)", scope)
    with pytest.raises(TypeError, match=rf"cannot send to the engines: `{name}` \(captured by "
                                        rf"<lambda>, \w+\) is {what}"):
        pp.map(task, range(3))


def test_the_header_iterable_may_still_be_a_generator():
    header = parse_header("x in (i * i for i in range(3))")
    items = evaluate_iterable(header, {})
    assert list(items) == [0, 1, 4]


@pytest.mark.parametrize("rng", [np.random.default_rng(1), random.Random(1),
                                 np.random.RandomState(1)])
def test_a_shipped_random_generator_is_warned_of_before_the_run(rng):
    header = parse_header("seed in range(3)")
    with pytest.warns(pp.SameRandomStream, match=r"`rng` \(line 2, \w+\) is a random generator"
                                                 r".*same numbers.*default_rng\(seed\)"):
        compile_cell(header, "rng.random()", {"rng": rng})


def test_nothing_is_warned_for_a_generator_made_in_the_cell(recwarn):
    compile_cell(parse_header("x in range(3)"), "import numpy\nnumpy.random.default_rng(x)", {})
    assert not [w for w in recwarn if issubclass(w.category, pp.SameRandomStream)]


def test_a_temporary_file_path_is_fine_to_ship():
    with tempfile.NamedTemporaryFile() as handle:
        compile_cell(parse_header("x in range(3)"), "open(path).read()", {"path": handle.name})
