"""Property tests (hypothesis): the `%%parallel` / `%pp` parsing, and the merge rules of
`records.merged_frame`. No cluster: the magic's Run and the cluster calls are stand-ins that
record what they were given, so every example runs the real parsing path in microseconds."""

import ast
import io
import keyword
import math
from contextlib import contextmanager, redirect_stdout
from unittest import mock

import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError

from pp_notebook import magic
from pp_notebook.cell import parse_header
from pp_notebook.errors import CellError
from pp_notebook.options import RunOptions, parse_size
from pp_notebook.records import METADATA_COLUMNS, TaskRecord, error_text, merged_frame
from pp_notebook.run import Run
from pp_notebook.snapshot import FAILED

from helpers import ipython_shell

SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def check(value):
    return None


def keyfn(item):
    return str(item)


NAMESPACE = {"data": [3, 1, 2], "p": [1, 2], "q": ["a", "b"], "check": check, "keyfn": keyfn}


@pytest.fixture(scope="module")
def magics():
    with ipython_shell() as shell:
        shell.user_ns.update(NAMESPACE)
        yield magic.ParallelMagics(shell=shell)


def unstarted(fn, items, options, labels):
    """What the magic would start: the real Run, built (its task checked) but never started."""
    return Run(fn, items, options, labels=labels)


STATUS = {"running": True, "cluster_id": "c1", "local": True, "engines": [], "adaptive": None}


@contextmanager
def no_cluster():
    """Runs are built, not started; every cluster call the magics make goes to a recorder."""
    calls = []

    def recorder(name):
        def call(*args, **kwargs):
            calls.append((name, args, kwargs))
            return dict(STATUS)
        return call

    patches = [mock.patch.object(magic.api, "submit", unstarted)]
    patches += [mock.patch.object(magic.cluster, name, recorder(name))
                for name in ("start", "stop", "status", "connect", "scale")]
    for patch in patches:
        patch.start()
    try:
        yield calls
    finally:
        for patch in patches:
            patch.stop()


# -- %%parallel: valid headers and options round-trip ---------------------------------------

NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True).filter(
    lambda name: not keyword.iskeyword(name))

ITERABLES = [
    "range(3)", "range(10 - 7)", "range(10-7)", "[-1, -2, 3]", "data", "data[1:]",
    "zip(p, q)", "{'k': -1, 'j': 2}.items()", "[v * 2 for v in data]", "'a -o b --x'.split()",
    "sorted(data, key=lambda v: -v)", "map(str, data)", "(i for i in range(4) if i - 1)",
    "p + q", "enumerate('ab')", "dict(a=1).items()", "[[1, -2], [3, 4]]",
    "range(3) if data else []", "data[::-1]", "{1: 'x'}",
]
UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "kb": 10**3, "k": 10**3,
         "m": 10**6, "g": 10**9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "gi": 2**30}


@st.composite
def targets(draw):
    names = draw(st.lists(NAMES, min_size=1, max_size=3, unique=True))
    if len(names) == 1 and draw(st.booleans()):
        return names[0], names
    inner = ", ".join(names) + ("," if len(names) == 1 else "")
    return draw(st.sampled_from(["{}", "({})", "[{}]"])).format(inner), names


@st.composite
def iterables(draw):
    return draw(st.one_of(
        st.sampled_from(ITERABLES),
        st.integers(0, 40).map(lambda n: f"range({n})"),
        st.lists(st.integers(-9, 9), max_size=5).map(repr)))


@st.composite
def options(draw):
    """(option text, expected RunOptions fields, expected other args)."""
    fields, others, parts = {}, {"out": None, "engines": None}, []

    def value_option(flag, text):
        if flag.startswith("--") and draw(st.booleans()):
            parts.append(f"{flag}={text}")
        else:
            parts.append(f"{flag} {text}")

    if draw(st.booleans()):
        others["out"] = draw(NAMES)
        value_option(draw(st.sampled_from(["-o", "--out"])), others["out"])
    if draw(st.booleans()):
        others["engines"] = str(draw(st.integers(1, 8)))  # read as a number once checked
        value_option("-n", others["engines"])
    if draw(st.booleans()):
        text = draw(st.one_of(st.integers(1, 10**6).map(str),
                              st.floats(0.001, 1e5).map(repr)))
        fields["timeout"] = float(text)
        value_option("--timeout", text)
    if draw(st.booleans()):
        fields["retries"] = draw(st.integers(0, 9))
        value_option("--retries", str(fields["retries"]))
    if draw(st.booleans()):
        fields["batch"] = draw(st.one_of(st.just("auto"), st.integers(1, 10_000)))
        value_option("--batch", str(fields["batch"]))
    if draw(st.booleans()):
        fields["concurrency"] = draw(st.integers(1, 64))
        value_option("--concurrency", str(fields["concurrency"]))
    if draw(st.booleans()):
        number, unit = draw(st.integers(1, 999)), draw(st.sampled_from(sorted(UNITS)))
        fields["memory_limit"] = number * UNITS[unit]
        value_option("--memory-limit", f"{number}{unit}")
    if draw(st.booleans()):
        fields["validate"] = check
        value_option("--validate", "check")
    if draw(st.booleans()):
        fields["checkpoint"] = "/tmp/pp-props/" + draw(NAMES) + ".ckpt"
        value_option("--checkpoint", fields["checkpoint"])
        if draw(st.booleans()):
            fields["key"] = keyfn
            value_option("--key", "keyfn")
    if draw(st.booleans()):
        fields["speculate"] = True
        parts.append("--speculate")
    for flag, name in (("--quiet", "quiet"), ("--no-widget", "no_widget")):
        others[name] = draw(st.booleans())
        if others[name]:
            parts.append(flag)
    ending = draw(st.sampled_from(["", "background", "raise_"]))
    others["background"], others["raise_"] = ending == "background", ending == "raise_"
    if ending:
        parts.append({"background": "--background", "raise_": "--raise"}[ending])
    return " ".join(draw(st.permutations(parts))), fields, others


@SETTINGS
@given(target=targets(), iterable=iterables(), opts=options(),
       gap=st.sampled_from([" ", "  "]))
def test_a_valid_cell_header_round_trips_through_the_magic(magics, target, iterable, opts, gap):
    (target_text, names), (option_text, fields, others) = target, opts
    line = f"{target_text} in {iterable}" + (gap + option_text if option_text else "")
    header = parse_header(line)
    python = ast.parse(f"for {target_text} in {iterable}: pass").body[0]
    assert ast.unparse(header.target) == ast.unparse(python.target)
    assert header.iterable_source == ast.unparse(python.iter)
    assert header.options == option_text

    body = names[0] if target_text == names[0] else f"({', '.join(names)},)"
    with no_cluster() as calls:
        run, args = magics.submit(line, body)
    assert run.options == RunOptions(**fields)
    items = [record.item for record in run.records]
    assert items == list(eval(iterable, dict(NAMESPACE)))
    for name, value in others.items():
        assert getattr(args, name) == value, name
    starts = [c for c in calls if c[0] == "start"]
    assert starts == ([("start", (int(others["engines"]),), {})] if others["engines"] else [])
    if target_text == names[0] and items:
        assert run.fn(items[0]) == items[0]  # the body's value is the item itself


# -- %%parallel: garbage is a UsageError --------------------------------------------------

TOKENS = ["x", "a, b", "in", "range(3)", "data", "-o", "--out", "df", "1x", "--timeout", "0",
          "-1", "2.5", "nan", "abc", "--batch", "auto", "--retries", "-n", "--memory-limit",
          "5XB", "500MB", "--raise", "--background", "--quiet", "(", ")", "[", "]", ",", "=",
          "--nope", "-", "--", "'", '"', "for", ":", "lambda", "--concurrency", "2000",
          "--validate", "nothere", "--key", "--checkpoint", "/tmp/c", "%", "\\", "x.y",
          "f(x)", "*", "**", "if", "else", "--speculate", "-o=df", "--timeout=", "0x10"]
LINE_TEXT = st.text(st.characters(blacklist_characters="\n\r"), max_size=40)


def _iterable_raises(line):
    """The exception type evaluating the line's iterable raises by itself, if any: the
    user's own expression may raise (1/0, a failing call) and that is not the magic's doing."""
    try:
        source = parse_header(line).iterable_source
    except CellError:
        return None
    try:
        eval(source, dict(NAMESPACE))
    except Exception as exc:
        return type(exc)
    return None


@pytest.mark.filterwarnings("ignore::SyntaxWarning", "ignore::DeprecationWarning")
@SETTINGS
@given(line=st.one_of(LINE_TEXT, st.lists(st.sampled_from(TOKENS), max_size=9).map(" ".join)),
       body=st.one_of(st.sampled_from(["x", "0", "x +", "yield 1", "nothere", "import os\nx",
                                        "", "from os import *", "return 1"]),
                      st.text(max_size=20)))
@example(line="x in range(3) --timeout 0", body="x")
@example(line="x in", body="x")
@example(line="x in range(3) --batch 0", body="x")
@example(line="x in range(3) --memory-limit 5XB", body="x")
@example(line="x in range(3) -o 1x", body="x")
@example(line="x in range(3) --background --raise", body="x")
@example(line="x in range(3) --key keyfn", body="x")
@example(line="x in 'unclosed", body="x")
def test_garbage_never_raises_anything_but_a_usage_error(magics, line, body):
    with no_cluster():
        try:
            magics.submit(line, body)
        except UsageError as exc:
            assert str(exc).strip(), f"an empty UsageError for {line!r}"
        except Exception as exc:
            assert type(exc) is _iterable_raises(line), (
                f"{line!r} / {body!r} raised {type(exc).__name__}: {exc}, not a UsageError")


# -- %pp ------------------------------------------------------------------------------------

@st.composite
def pp_lines(draw):
    """(line, expected cluster call)."""
    command = draw(st.sampled_from(["start", "scale", "status", "stop", "connect"]))
    if command in ("status", "stop"):
        return command, (command, (), {})
    if command == "connect":
        profile = draw(st.one_of(st.none(), NAMES))
        cluster_id = draw(st.one_of(st.none(), NAMES))
        path = draw(st.one_of(st.none(), NAMES.map(lambda n: f"/tmp/{n}.json")))
        parts = [f"--profile {profile}"] * (profile is not None)
        parts += [f"--cluster-id {cluster_id}"] * (cluster_id is not None)
        parts += [f"--file {path}"] * (path is not None)
        line = " ".join(["connect", *draw(st.permutations(parts))])
        return line, ("connect", (cluster_id or "", profile or "default"),
                      {"connection_file": path})
    auto = draw(st.booleans())
    adaptive = {}  # only what the line gives: the cluster functions hold the defaults
    parts = []
    if auto:
        engines = "auto"
        if draw(st.booleans()):
            adaptive["min_engines"] = draw(st.integers(1, 4))
            parts.append(f"--min {adaptive['min_engines']}")
        if draw(st.booleans()):
            adaptive["max_engines"] = draw(st.integers(1, 16))
            parts.append(f"--max {adaptive['max_engines']}")
        if draw(st.booleans()):
            adaptive["idle_timeout"] = float(draw(st.integers(1, 600)))
            parts.append(f"--idle {int(adaptive['idle_timeout'])}")
    else:
        engines = draw(st.integers(1, 16)) if command == "scale" or draw(st.booleans()) \
            else None
    line = " ".join([command, *([str(engines)] if engines is not None else []),
                     *draw(st.permutations(parts))])
    return line, (command, (engines,), adaptive)


@SETTINGS
@given(case=pp_lines())
def test_pp_commands_round_trip_to_the_cluster_calls(magics, case):
    line, expected = case
    printed = io.StringIO()
    with no_cluster() as calls, redirect_stdout(printed):
        magics.pp(line)
    if expected[0] == "stop":
        assert [c[0] for c in calls] == ["status", "stop"]
    else:
        assert calls == [expected]
    assert printed.getvalue().strip()


PP_TOKENS = ["start", "stop", "status", "scale", "connect", "auto", "0", "3", "-1", "x", "--min",
             "--max", "--idle", "--profile", "--cluster-id", "--file", "p", "nan", "--", "="]


def _pp_outcome(magics, line):
    with no_cluster(), redirect_stdout(io.StringIO()):
        try:
            magics.pp(line)
        except UsageError as exc:
            assert str(exc).strip(), f"an empty UsageError for %pp {line!r}"


@SETTINGS
@given(line=st.one_of(
    st.text(st.characters(blacklist_characters="\n\r'\""), max_size=40),
    st.lists(st.sampled_from(PP_TOKENS), max_size=6).map(" ".join)))
@example(line="status 3")
@example(line="scale")
@example(line="start 3 --max 4")
@example(line="stop --profile p")
@example(line="start 0")
def test_pp_garbage_never_raises_anything_but_a_usage_error(magics, line):
    _pp_outcome(magics, line)


@SETTINGS
@given(line=st.tuples(st.lists(st.sampled_from(PP_TOKENS), max_size=5).map(" ".join),
                      st.sampled_from(['"', "'", "'p", '"my profile'])).map(" ".join))
@example(line='"')
@example(line="connect --profile 'my profile")
def test_pp_with_an_unbalanced_quote_is_a_usage_error(magics, line):
    with no_cluster(), redirect_stdout(io.StringIO()), \
            pytest.raises(UsageError, match="quotation") as error:
        magics.pp(line)
    assert line in str(error.value)


# -- limits an engine can really apply ------------------------------------------------------

@SETTINGS
@given(number=st.integers(1, 10**6), unit=st.sampled_from(sorted(UNITS)),
       space=st.sampled_from(["", " "]))
def test_sizes_parse_to_their_bytes(number, unit, space):
    assert parse_size(f"{number}{space}{unit}") == number * UNITS[unit]
    assert RunOptions(memory_limit=f"{number}{unit}").memory_limit == number * UNITS[unit]


@SETTINGS
@given(text=st.sampled_from(["0.5", "0.9B", "0.0001KB", "0.4 b"]))
@example(text="0.5")
def test_an_accepted_size_is_at_least_one_byte(text):
    try:
        size = parse_size(text)
    except ValueError:
        return
    assert size >= 1, f"{text!r} was accepted as {size} bytes"


@SETTINGS
@given(timeout=st.floats(0.001, 1e6))
def test_reasonable_timeouts_are_accepted(timeout):
    assert RunOptions(timeout=timeout).timeout == timeout


@SETTINGS
@given(timeout=st.one_of(st.just(math.inf), st.floats(1e10, 1e300)))
@example(timeout=math.inf)
def test_timeouts_an_engine_cannot_arm_are_refused(magics, timeout):
    with pytest.raises(ValueError):
        RunOptions(timeout=timeout)
    with no_cluster(), pytest.raises(UsageError):
        magics.submit(f"x in range(3) --timeout {timeout!r}", "x")


# -- merged_frame ---------------------------------------------------------------------------

PLAIN_KEYS = ["a", "b", "c", "result"]
CLASHING_KEYS = PLAIN_KEYS + ["task", "status", "error", "engine", "duration_s"]
SCALARS = st.one_of(st.integers(-5, 5), st.text("xyz", max_size=3), st.none(),
                    st.just(1.5), st.booleans())


def items(keys, frames=True, rows=True):
    """One item's outcome: (status, value, error_type, error)."""
    key = st.sampled_from(keys)
    kinds = []
    if rows:
        kinds += [
            st.dictionaries(key, SCALARS, max_size=3).map(lambda d: ("ok", d)),
            st.dictionaries(key, st.integers(-5, 5), max_size=3).map(
                lambda d: ("ok", pd.Series(d, dtype=object if not d else None))),
            st.one_of(SCALARS, st.lists(st.integers(), max_size=2)).map(lambda v: ("ok", v)),
            st.tuples(st.sampled_from(FAILED + ("pending",)),
                      st.sampled_from([None, "ValueError"]), st.text("ab ", max_size=5)),
        ]
    if frames:
        kinds.append(st.builds(
            lambda columns, n, offset: ("ok", pd.DataFrame(
                {c: [i * 10 + j for i in range(n)] for j, c in enumerate(columns)},
                index=range(offset, offset + n) if columns else None)),
            st.lists(key, unique=True, max_size=3), st.integers(0, 3), st.integers(0, 9)))
    return st.one_of(kinds)


def records_of(outcomes, data=None):
    """TaskRecords of these outcomes; `data` draws their metadata (None: the defaults)."""
    records = []
    for task, outcome in enumerate(outcomes):
        record = TaskRecord(task, item=f"item{task}")
        if data is not None:
            record.engine = data.draw(st.one_of(st.none(), st.integers(0, 3)))
            record.host = data.draw(st.sampled_from([None, "h1"]))
            record.duration_s = data.draw(st.one_of(st.none(), st.just(0.25)))
            record.attempts = data.draw(st.integers(0, 3))
        if len(outcome) == 2:
            record.status, record.value = outcome
        else:
            record.status, record.error_type, record.error = outcome
            record.error = record.error or None
        records.append(record)
    return records


def _same(actual, expected):
    if isinstance(expected, list):
        return isinstance(actual, list) and actual == expected
    if expected is None:
        return actual is None or (not isinstance(actual, list) and pd.isna(actual))
    if not isinstance(actual, list) and pd.isna(actual):
        return False
    return actual == expected


def expected_rows(records):
    """(record, {key: value}) per row, in input order, as the merge rules say."""
    rows = []
    for record in records:
        value = record.value if record.status == "ok" else None
        if record.status != "ok":
            rows.append((record, {}))
        elif isinstance(value, pd.DataFrame):
            rows += [(record, dict(row)) for _, row in value.iterrows()]
        elif isinstance(value, pd.Series):
            rows.append((record, value.to_dict()))
        elif isinstance(value, dict):
            rows.append((record, value))
        else:
            rows.append((record, {"result": value}))
    return rows


def check_merge(records):
    frame = merged_frame(records)
    keys = set()
    for record in records:
        if record.status == "ok":
            value = record.value
            keys |= set(value.columns if isinstance(value, pd.DataFrame) else value.keys()
                        if isinstance(value, (dict, pd.Series)) else ["result"])
    meta = {name: f"pp_{name}" if name in keys else name for name in METADATA_COLUMNS}
    assert set(frame.columns) == set(meta.values()) | keys
    assert tuple(frame.columns[-len(METADATA_COLUMNS):]) == tuple(meta.values())  # last
    assert frame.index.name == ("pp_task" if "task" in keys else "task")
    rows = expected_rows(records)
    assert len(frame) == len(rows)
    for position, (record, values) in enumerate(rows):
        row = frame.iloc[position]
        assert frame.index[position] == record.task, (position, record)
        assert row[meta["status"]] == record.status
        assert _same(row[meta["engine"]], record.engine)
        assert _same(row[meta["host"]], record.host)
        assert _same(row[meta["duration_s"]], record.duration_s)
        assert row[meta["attempts"]] == record.attempts
        assert _same(row[meta["error"]], error_text(record.error_type, record.error))
        if record.failed:
            assert row[meta["status"]] in FAILED
            assert _same(row[meta["error"]], record.message)
        for key in keys:
            assert _same(row[key], values.get(key)), (position, key, row[key], values)


@SETTINGS
@given(data=st.data(), outcomes=st.lists(items(PLAIN_KEYS), max_size=8))
def test_merged_frame_keeps_input_order_and_every_value(data, outcomes):
    check_merge(records_of(outcomes, data))


@SETTINGS
@given(data=st.data(), outcomes=st.one_of(
    st.lists(items(CLASHING_KEYS, frames=False), max_size=8),
    st.lists(items(CLASHING_KEYS, rows=False), max_size=1)))
def test_a_result_key_named_like_metadata_prefixes_the_metadata_column(data, outcomes):
    """One piece of rows (no DataFrame), or one DataFrame alone: the documented pp_ rule."""
    check_merge(records_of(outcomes, data))


@SETTINGS
@given(data=st.data(), outcomes=st.lists(items(CLASHING_KEYS), max_size=6))
@example(data=None, outcomes=[("ok", pd.DataFrame({"status": ["mine"]})),
                              ("error", "ValueError", "bad")])
def test_the_pp_prefix_holds_across_dataframe_and_row_results(data, outcomes):
    check_merge(records_of(outcomes, data))
