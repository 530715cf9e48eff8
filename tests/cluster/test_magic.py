"""%%parallel and %pp in a real IPython shell, on the session's real local cluster."""

import _thread
import ast
import json
import pickle
import threading
import time

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from IPython.core.error import UsageError

import pp_notebook as pp
from pp_notebook.cell import ModuleRef, parse_header
from pp_notebook.errors import CellError
from pp_notebook.magic import ParallelMagics

from helpers import ipython_shell, wait_until


@pytest.fixture(scope="module")
def shell():
    with ipython_shell() as ip:
        yield ip


@pytest.fixture
def ip(shell, cluster):
    """The shell, with the session's cluster as the kernel's cluster."""
    return shell


def define(ip, source):
    """Run a notebook cell that defines things; it must succeed."""
    result = ip.run_cell(source)
    assert result.success, result.error_in_exec or result.error_before_exec


def parallel(ip, line, body):
    """Run a %%parallel cell; returns what the cell returns."""
    return ip.run_cell_magic("parallel", line, body)


# -- the header ---------------------------------------------------------------------------

@pytest.mark.parametrize("line, target, iterable, options", [
    ("x in range(3)", "x", "range(3)", ""),
    ("x in range(10 - 1) -o df --timeout 3", "x", "range(10 - 1)", "-o df --timeout 3"),
    ("a, b in zip(p, q) --batch 5", "(a, b)", "zip(p, q)", "--batch 5"),
    ("(i, row) in df.iterrows() --no-widget", "(i, row)", "df.iterrows()", "--no-widget"),
    ("k, v in d.items()", "(k, v)", "d.items()", ""),
    ("x in [-1, -2] -n 2", "x", "[-1, -2]", "-n 2"),
    ("x in a-b", "x", "a - b", ""),
])
def test_the_header_splits_into_target_iterable_and_options(line, target, iterable, options):
    header = parse_header(line)
    assert ast.unparse(header.target) == target
    assert header.iterable_source == iterable
    assert header.options == options


@pytest.mark.parametrize("line, message", [
    ("x range(3)", "needs `in`"),
    ("f(x) in items", "not valid Python"),
    ("x.attr in items", "must be a name or a tuple of names"),
])
def test_a_bad_header_is_refused_with_the_expected_form(line, message):
    with pytest.raises(CellError, match=message):
        parse_header(line)


# -- running cells ------------------------------------------------------------------------

def test_a_name_target_runs_the_body_per_item_and_the_last_expression_is_the_result(ip):
    df = parallel(ip, "x in range(6) --quiet", "y = x * 10\ny + 1")
    assert list(df["status"]) == ["ok"] * 6
    assert list(df["result"]) == [1, 11, 21, 31, 41, 51]


@pytest.mark.parametrize("line, setup, body, expected", [
    ("a, b in pairs", "pairs = [(1, 2), (3, 4)]", "a * b", [2, 12]),
    ("(i, row) in frame.iterrows()", "import pandas\nframe = pandas.DataFrame({'v': [10, 20]})",
     "row['v'] + i", [10, 21]),
    ("k, v in scores.items()", "scores = {'a': 1, 'b': 2}", "f'{k}={v}'", ["a=1", "b=2"]),
    ("first, *rest in rows", "rows = [(1, 2, 3), (4,)]", "first + len(rest)", [3, 4]),
])
def test_tuple_targets_unpack_each_item(ip, line, setup, body, expected):
    define(ip, setup)
    df = parallel(ip, line + " --quiet", body)
    assert list(df["result"]) == expected


def test_a_body_that_ends_in_a_statement_gives_no_result(ip):
    df = parallel(ip, "x in range(3) --quiet", "y = x")
    assert list(df["status"]) == ["ok"] * 3
    assert df["result"].isna().all()


def test_functions_classes_and_values_of_the_notebook_are_shipped(ip):
    define(ip, "def triple(v):\n    return 3 * v\n\n"
               "class Box:\n    def __init__(self, v):\n        self.v = v\n\n"
               "offset = 100\n"
               "import threading\nunrelated_lock = threading.Lock()")
    df = parallel(ip, "x in range(4) --quiet", "box = Box(triple(x) + offset)\nbox.v")
    assert list(df["result"]) == [100, 103, 106, 109]
    shipped = set(pp.last_run().fn.__globals__) - {"__name__"}
    assert shipped == {"Box", "triple", "offset"}  # what the body reads, not the lock


def test_a_module_travels_by_name_under_its_alias(ip):
    define(ip, "import json as js\nimport os.path as osp")
    df = parallel(ip, "x in range(2) --quiet",
                  "import sys\n{'dump': js.dumps([x]), 'module': osp.__name__,\n"
                  " 'imported': sys.modules[osp.__name__] is osp}")
    assert list(df["dump"]) == ["[0]", "[1]"]
    assert list(df["module"]) == ["posixpath", "posixpath"]
    assert df["imported"].all()  # the engine's own module, not a pickled copy
    shipped = pp.last_run().fn.__globals__
    assert isinstance(shipped["js"], ModuleRef) and shipped["js"].name == "json"
    assert pickle.loads(cloudpickle.dumps(shipped["js"])) is json
    assert len(cloudpickle.dumps(shipped["js"])) < 100


def test_names_the_body_assigns_defines_or_imports_are_not_shipped(ip):
    define(ip, "import threading\nhelper = threading.Lock()\nfloor = threading.Lock()")
    df = parallel(ip, "x in range(3) --quiet",
                  "from math import floor\ndef helper(v):\n    return floor(v)\nhelper(x + 0.5)")
    assert list(df["result"]) == [0, 1, 2]
    assert set(pp.last_run().fn.__globals__) == {"__name__"}


def test_shipped_values_are_unpickled_once_per_engine_not_once_per_task(ip):
    define(ip, """
import uuid

def count_load(token):
    import builtins
    loads = builtins.__dict__.setdefault("_pp_test_loads", {})
    loads[token] = loads.get(token, 0) + 1
    return Marker(token)

class Marker:
    def __init__(self, token):
        self.token = token

    def __reduce__(self):
        return count_load, (self.token,)

marker = Marker(uuid.uuid4().hex)
""")
    df = parallel(ip, "x in range(300) --quiet",
                  "import builtins, os\n"
                  "{'loads': builtins._pp_test_loads[marker.token], 'pid': os.getpid()}")
    assert (df["status"] == "ok").all()
    assert (df["loads"] == 1).all()  # each engine unpickled the shipped names once
    assert df["pid"].nunique() <= 2


def test_print_output_of_each_task_is_kept_in_its_record(ip):
    parallel(ip, "x in range(3) --quiet", "print('item', x)\nx")
    assert [r.output for r in pp.last_run().records] == [f"item {x}\n" for x in range(3)]


def test_an_item_that_does_not_unpack_fails_at_the_header_line(ip):
    df = parallel(ip, "a, b in [(1, 2), 3] --quiet", "a + b")
    assert list(df["status"]) == ["ok", "error"]
    assert df.loc[1, "error"] == "TypeError: cannot unpack non-iterable int object"
    tb = pp.last_run().errors()["traceback"].iloc[0]
    assert "line 1, in <cell>" in tb and "%%parallel a, b in [(1, 2), 3]" in tb


def test_without_out_the_frame_is_the_cell_result_and_underscore(ip):
    result = ip.run_cell("%%parallel x in range(3) --quiet\n{'x': x, 'double': 2 * x}")
    assert result.success
    assert isinstance(result.result, pd.DataFrame)
    assert list(result.result["double"]) == [0, 2, 4]
    assert ip.user_ns["_"] is result.result


def test_out_binds_the_frame_and_the_cell_shows_nothing(ip):
    result = ip.run_cell("%%parallel x in range(3) -o bound --quiet\n{'x': x}")
    assert result.success and result.result is None
    assert list(ip.user_ns["bound"]["x"]) == [0, 1, 2]


def test_failed_tasks_are_rows_and_their_tracebacks_point_at_the_cell(ip, capsys):
    df = parallel(ip, "x in range(3) --no-widget",
                  "y = x + 1\nif x == 1:\n    raise ValueError(f'bad {x}')\n{'y': y}")
    assert list(df["status"]) == ["ok", "error", "ok"]
    assert df.loc[1, "error"] == "ValueError: bad 1"
    assert list(df["y"].iloc[[0, 2]]) == [1, 3]
    shown = capsys.readouterr().out
    assert "3 tasks · 2 ok · 1 failed" in shown  # the summary line
    assert "ValueError: bad 1" in shown  # the failures table
    tb = pp.last_run().errors()["traceback"].iloc[0]
    assert f"Cell In[{ip.execution_count}], line 4, in <cell>" in tb
    assert "raise ValueError(f'bad {x}')" in tb  # the cell's own source line
    assert "run_batch" not in tb and "<dynamic-code>" not in tb


def test_a_task_over_its_timeout_is_a_timeout_row(ip):
    df = parallel(ip, "x in range(3) --timeout 0.5 --quiet",
                  "import time\nif x == 1:\n    time.sleep(10)\nx")
    assert list(df["status"]) == ["ok", "timeout", "ok"]
    assert df.loc[1, "error"].startswith("TaskTimeout")


def test_raise_raises_after_binding_the_results(ip):
    with pytest.raises(pp.RunFailed, match="1 of 2 tasks did not succeed.*`failing`"):
        parallel(ip, "x in range(2) -o failing --raise --quiet", "1 / x")
    assert list(ip.user_ns["failing"]["status"]) == ["error", "ok"]


def test_validate_takes_a_checker_from_the_notebook(ip):
    define(ip, "def small(r):\n    return None if r < 2 else f'{r} is too big'")
    df = parallel(ip, "x in range(3) --validate small --quiet", "x")
    assert list(df["status"]) == ["ok", "ok", "invalid"]
    assert df.loc[2, "error"] == "InvalidResult: 2 is too big"


def test_options_reach_the_run(ip, tmp_path):
    parallel(ip, "x in range(4) -n 2 --retries 1 --batch 2 --timeout 9 --quiet", "x")
    run = pp.last_run()
    assert (run.options.retries, run.options.batch, run.options.timeout) == (1, 2, 9.0)
    assert len(pp.status()["engines"]) == 2
    define(ip, "def name(x):\n    return str(x)")
    parallel(ip, f"x in range(4) --checkpoint {tmp_path / 'c.ckpt'} --key name --speculate "
                 "--concurrency 3 --memory-limit 1.5GB --quiet", "x")
    options = pp.last_run().options
    assert (options.speculate, options.concurrency, options.memory_limit) == (True, 3, 1.5e9)
    assert options.checkpoint == str(tmp_path / "c.ckpt") and options.key(7) == "7"


def test_background_returns_the_run_at_once(ip):
    started = time.monotonic()
    returned = parallel(ip, "x in range(4) -o later --background --quiet",
                        "import time\ntime.sleep(0.5)\nx * 2")
    assert time.monotonic() - started < 0.5
    run = ip.user_ns["later"]
    assert returned is None and isinstance(run, pp.Run) and run is pp.last_run()
    assert run.wait(30)
    assert list(run.result()["result"]) == [0, 2, 4, 6]


def test_background_without_out_makes_the_run_the_cell_result(ip):
    run = parallel(ip, "x in range(2) --background --quiet", "x")
    assert isinstance(run, pp.Run) and run.wait(30)


def test_an_interrupt_keeps_finished_results_then_ends_the_cell_as_interrupted(ip, capsys):
    timer = threading.Timer(1.5, _thread.interrupt_main)
    timer.start()
    try:
        outcome = ip.run_cell("%%parallel x in range(6) --batch 1 --no-widget -o stopped\n"
                              "import time\nif x >= 2:\n    time.sleep(30)\nx")
    finally:
        timer.cancel()
    error = outcome.error_in_exec  # the cell failed, as an interrupted plain cell does
    assert isinstance(error, pp.RunInterrupted) and isinstance(error, KeyboardInterrupt)
    assert "2 of 6 tasks had ended" in str(error) and "4 are marked `cancelled`" in str(error)
    assert "`stopped`" in str(error) and error.run is pp.last_run()
    df = ip.user_ns["stopped"]  # bound before the cell ended
    assert list(df["status"]) == ["ok", "ok"] + ["cancelled"] * 4
    assert list(df["result"].iloc[:2]) == [0, 1]
    shown = capsys.readouterr()
    assert "6 tasks · 2 ok · 4 cancelled" in shown.out  # the summary, before the error
    assert "failed" not in shown.out
    assert pp.last_run().errors().empty  # cancelled is not failed


# -- bad input: a clear message, nothing submitted ----------------------------------------

@pytest.mark.parametrize("line, body, culprit", [
    ("x in range(3) --bogus 1", "x", "unrecognized arguments: --bogus"),
    ("x range(3)", "x", "needs `in`"),
    ("x in range(3)", "y = x\nz = undefined_thing + y", "`undefined_thing` (line 3)"),
    ("x in range(3)", "log_file.write(str(x))", "`log_file` (line 2, TextIOWrapper)"),
    ("x in range(3)", "y = x\nz = = 1", "line 3"),
    ("x in range(undefined_count)", "x", "'undefined_count' is not defined (line 1"),
    ("x in range(3) --timeout 0", "x", "--timeout"),
    ("x in range(3) -o 1bad", "x", "-o needs a Python name"),
    ("x in range(3) --validate no_such_check", "x", "no_such_check"),
    ("x in range(3) --background --raise", "x", "--raise cannot go with --background"),
    ("x in range(3) --memory-limit lots", "x", "--memory-limit must be a size"),
    ("x in range(3) --concurrency 0", "x", "--concurrency"),
    ("x in range(3) --checkpoint c.ckpt --key log_file", "x", "--key must be a function"),
])
def test_bad_input_is_a_usage_error_naming_the_culprit_and_nothing_runs(
        ip, tmp_path, line, body, culprit):
    ip.user_ns["log_file"] = open(tmp_path / "log.txt", "w")
    before = pp.last_run()
    try:
        with pytest.raises(UsageError) as error:
            parallel(ip, line, body)
    finally:
        ip.user_ns.pop("log_file").close()
    assert culprit in str(error.value)
    assert pp.last_run() is before


def test_an_unshippable_value_gets_a_hint_to_create_it_in_the_cell(ip):
    define(ip, "import threading\nguard = threading.Lock()")
    with pytest.raises(UsageError, match=r"`guard` \(line 2, lock\) is a threading primitive"
                                         r".*Create it inside the cell"):
        parallel(ip, "x in range(2)", "with guard:\n    x")


def test_a_syntax_error_shows_the_cell_line_and_source(ip):
    with pytest.raises(UsageError) as error:
        parallel(ip, "x in range(2)", "y = x\nif y >\n    y")
    message = str(error.value)
    assert "line 3" in message and "if y >" in message and "SyntaxError" in message


def test_the_cell_is_checked_before_its_iterable_is_consumed(ip):
    define(ip, "numbers = iter([1, 2, 3])")
    with pytest.raises(UsageError):
        parallel(ip, "x in numbers", "x + missing_name_here")
    assert list(ip.user_ns["numbers"]) == [1, 2, 3]


# -- %pp and the help ---------------------------------------------------------------------

def test_pp_status_lists_each_engine(ip, capsys):
    # the controller learns of finished tasks a moment after the client: wait for it to agree
    assert wait_until(lambda: all(e["state"] == "idle" for e in pp.status()["engines"]), 10)
    ip.run_line_magic("pp", "status")
    out = capsys.readouterr().out
    assert "(local): 2 engines" in out
    for engine in pp.status()["engines"]:
        assert f"engine {engine['id']}: idle, pid {engine['pid']}" in out


@pytest.mark.parametrize("line, message", [
    ("scale", "needs the number of engines"),
    ("stop 3", "takes no number"),
    ("status --profile x", "go with `%pp connect`"),
    ("frobnicate", "invalid choice"),
    ("start 2 --max 3", "go with `auto`"),
    ("scale some", "the number of engines must be 'auto' or an integer >= 1, not 'some'"),
])
def test_pp_refuses_bad_commands(ip, line, message):
    with pytest.raises(UsageError, match=message):
        ip.run_line_magic("pp", line)


def test_the_help_documents_the_header_and_every_option():
    doc = ParallelMagics.parallel.__doc__
    assert "%%parallel TARGET in ITERABLE [options]" in doc
    for option in ("--out", "--engines", "--timeout", "--retries", "--batch", "--no-widget",
                   "--quiet", "--validate", "--background", "--raise", "--checkpoint", "--key",
                   "--speculate", "--concurrency", "--memory-limit"):
        assert option in doc


def test_pp_scale_auto_makes_the_cluster_follow_the_work_and_a_number_fixes_it(ip, capsys):
    try:
        ip.run_line_magic("pp", "scale auto --max 2 --idle 60")
        assert "(local, adaptive 1–2)" in capsys.readouterr().out
        assert pp.status()["adaptive"]["idle_timeout"] == 60.0
    finally:
        ip.run_line_magic("pp", "scale 2")
    assert pp.status()["adaptive"] is None and "(local): 2 engines" in capsys.readouterr().out


# -- notebook semantics ---------------------------------------------------------------------

def test_a_read_mode_file_is_refused_before_anything_runs(ip, tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("line one\nline two\n")
    before = pp.last_run()
    with open(path) as reader:
        ip.user_ns["reader"] = reader
        try:
            with pytest.raises(UsageError, match=r"`reader` \(line 2, TextIOWrapper\) is an open "
                                                 r"file.*depend on scheduling.*nothing was run"):
                parallel(ip, "x in range(4)", "reader.readline()")
        finally:
            del ip.user_ns["reader"]
    assert pp.last_run() is before


def test_a_generator_is_fine_as_the_iterable_but_not_as_a_shipped_name(ip):
    define(ip, "pending = (i for i in range(3))")
    with pytest.raises(UsageError, match=r"`pending` \(line 2, generator\) is a generator"):
        parallel(ip, "x in range(2)", "next(pending)")
    df = parallel(ip, "x in (i * 2 for i in range(3)) --quiet", "x + 1")
    assert list(df["result"]) == [1, 3, 5]


def test_a_shipped_random_generator_is_warned_of(ip):
    define(ip, "import numpy\nrng = numpy.random.default_rng(0)")
    with pytest.warns(pp.SameRandomStream, match="default_rng\\(x\\)"):
        df = parallel(ip, "x in range(6) --batch 1 --quiet", "rng.random()")
    first = np.random.default_rng(0).random()
    # what the warning is about: each engine's first draw is the same number
    assert (df.groupby("engine")["result"].first() == first).all()


def test_the_merged_frame_leads_with_the_header_names_and_the_result(ip):
    df = parallel(ip, "beta, gamma in [(1, 0.5), (2, 0.0), (3, 0.25)] --quiet",
                  "{'n': int(beta / gamma)}")
    assert list(df.columns) == ["beta", "gamma", "n", "status", "engine", "host", "duration_s",
                                "attempts", "error"]
    assert df.index.name == "task" and list(df.index) == [0, 1, 2]
    assert list(df["beta"]) == [1, 2, 3] and str(df["beta"].dtype) == "int64"
    assert str(df["n"].dtype) == "Int64" and df["n"].isna().tolist() == [False, True, False]
    assert df.loc[1, "error"].startswith("ZeroDivisionError")
    assert df["error"].isna().tolist() == [True, False, True]
    assert list(pp.last_run().errors().index) == [1]


def test_a_row_series_target_is_not_a_column(ip):
    define(ip, "import pandas\nframe = pandas.DataFrame({'v': [10, 20]})")
    df = parallel(ip, "i, row in frame.iterrows() --quiet", "{'double': row['v'] * 2}")
    assert list(df.columns[:2]) == ["i", "double"] and "row" not in df.columns


def test_task_tracebacks_name_notebook_cells_as_ipython_does(ip):
    define(ip, "def helper(v):\n    return 1 / v")
    defined_in = ip.execution_count
    parallel(ip, "x in range(2) --quiet", "y = x\nhelper(y)")
    tb = pp.last_run().errors()["traceback"].iloc[0]
    assert f"Cell In[{defined_in}], line 2, in helper" in tb and "return 1 / v" in tb
    assert f"Cell In[{ip.execution_count}], line 3, in <cell>" in tb and "helper(y)" in tb
    assert "File " not in tb.split("Traceback")[-1].split("helper(y)")[0]


def test_the_help_starts_with_the_usage_line(ip):
    assert ip.find_cell_magic("parallel").__doc__.startswith(
        "%%parallel TARGET in ITERABLE [options]")
    assert ip.find_line_magic("pp").__doc__.startswith("%pp ")
    assert "::" not in ip.find_cell_magic("parallel").__doc__.splitlines()[0]


def test_the_background_line_says_when_the_run_has_finished(ip, capsys):
    run = parallel(ip, "x in range(3) --background --no-widget -o bg", "x")
    assert run is None and ip.user_ns["bg"].wait(30)
    seen: list[str] = []

    def finished():
        seen.append(capsys.readouterr().out)
        return "have finished" in "".join(seen)

    assert wait_until(finished, 10)
    text = "".join(seen)
    assert "3 tasks running in the background as `bg`" in text
    assert "3 tasks ran in the background as `bg` and have finished: 3 tasks · 3 ok" in text
