"""Run options are declared once: the magic's arguments and `map`'s keywords follow RunOptions,
and one checker gives one message per problem, naming the option as the caller spelled it."""

import inspect
from dataclasses import fields

import pytest
from IPython.core.magic_arguments import parse_argstring

import pp_notebook as pp
from pp_notebook.magic import ParallelMagics
from pp_notebook.options import RunOptions, flag, number

OPTIONS = [f.name for f in fields(RunOptions)]


def test_map_takes_every_run_option_as_a_keyword_with_its_default():
    parameters = inspect.signature(pp.map).parameters
    keywords = {name: p.default for name, p in parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert keywords == {f.name: f.default for f in fields(RunOptions)}
    for name in OPTIONS:
        assert f"`{name}`:" in pp.map.__doc__


def test_the_magic_has_one_argument_per_run_option_with_its_help():
    doc = ParallelMagics.parallel.__doc__
    for f in fields(RunOptions):
        assert flag(f.name) in doc
        assert f.metadata["help"].split()[0] in doc
        value = "" if f.metadata["metavar"] is None else " 1"
        args = parse_argstring(ParallelMagics.parallel, f"{flag(f.name)}{value}")
        assert getattr(args, f.name) == (True if not value else "1")


@pytest.mark.parametrize("option, value, message", [
    ("timeout", 0, "must be a positive number of seconds"),
    ("retries", -1, "must be an integer >= 0"),
    ("batch", 0, "must be 'auto' or an integer >= 1"),
    ("concurrency", 2000, "must be an integer from 1 to 1024"),
    ("memory_limit", "lots", "must be a size of at least 1 byte"),
])
def test_one_message_per_problem_named_as_each_caller_spells_the_option(option, value,
                                                                        message):
    with pytest.raises(ValueError) as from_python:
        RunOptions(**{option: value})
    with pytest.raises(ValueError) as from_magic:
        RunOptions.from_text({option: str(value)}, lambda flag_, name: name)
    assert str(from_python.value).startswith(f"{option} {message}")
    assert str(from_magic.value).startswith(f"{flag(option)} {message}")
    assert str(from_python.value)[len(option):] == str(from_magic.value)[len(flag(option)):]


def test_notebook_names_are_looked_up_and_numbers_read_from_text():
    seen = []

    def lookup(option, name):
        seen.append((option, name))
        return len

    options = RunOptions.from_text({"timeout": "2.5", "batch": "4", "validate": "check",
                                    "checkpoint": "123", "memory_limit": "2GB"}, lookup)
    assert (options.timeout, options.batch, options.checkpoint) == (2.5, 4, "123")
    assert options.validate is len and seen == [("--validate", "check")]
    assert options.memory_limit == 2_000_000_000


def test_wrong_types_are_type_errors():
    with pytest.raises(TypeError, match="speculate must be True or False"):
        RunOptions(speculate="yes")
    with pytest.raises(TypeError, match="key must be a function of an item"):
        RunOptions(key=3, checkpoint="c.ckpt")
    with pytest.raises(ValueError, match="key names items in a checkpoint: give checkpoint"):
        RunOptions(key=len)


@pytest.mark.parametrize("text, value", [("3", 3), ("2.5", 2.5), ("auto", "auto"),
                                         ("1e3", 1000.0), ("x1", "x1")])
def test_number_reads_what_it_can(text, value):
    assert number(text) == value and type(number(text)) is type(value)
