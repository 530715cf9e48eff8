"""Compile a `%%parallel` cell into a task function: the header's target, the body, the result.

The cell
    %%parallel i, row in df.iterrows() --timeout 30
    y = f(row)
    {"i": i, "y": y}
becomes, in effect, `def <cell>(item): i, row = item; y = f(row); return {"i": i, "y": y}`,
compiled from the cell's own text (registered in `linecache`), so that syntax errors and the
tracebacks of failing tasks name the cell's lines. The names the body reads but never assigns
are looked up in the notebook when the cell runs and become the function's globals; they travel
to the engines inside the pickled function, once per engine and run. Modules go by name and are
imported again on the engine, never pickled.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import io
import itertools
import linecache
import re
import symtable
import tokenize
import traceback
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

from IPython import get_ipython

from .errors import CellError
from .records import ItemNamed, Labels
from .shipping import dumps, refusal, unpicklable, warn_same_streams
from .store import STORE
from .tracebacks import relabel

MAGIC = "%%parallel"
EXAMPLE = "%%parallel x in range(10) -o df"
_ITEM = ".item"  # the task function's parameter: a name no Python code can spell
_cell_numbers = itertools.count(1)


@dataclass(frozen=True)
class Header:
    """`TARGET in ITERABLE [options]`: the loop target, the iterable, the option text."""

    line: str
    target: ast.expr
    iterable: ast.expr
    options: str
    filename: str  # the cell's name in linecache, as tracebacks and errors show it
    number: int | None = None  # the cell's execution count, In[number], when known

    @property
    def iterable_source(self) -> str:
        return ast.unparse(self.iterable)

    @property
    def names(self) -> list[str]:
        """The names the target binds, in order: `i, (a, b)` → i, a, b."""
        return [node.id for node in _in_order(self.target) if isinstance(node, ast.Name)]


def _in_order(node: ast.AST) -> Iterator[ast.AST]:
    yield node
    for child in ast.iter_child_nodes(node):
        yield from _in_order(child)


def header_labels(header: Header) -> Labels:
    """The label columns of an item: each name the header binds, as the item unpacks (an
    item that does not unpack labels nothing; its row says why it failed)."""
    names = header.names
    if isinstance(header.target, ast.Name):
        return ItemNamed(header.target.id)
    source = (f"def labels(item):\n    try:\n        {ast.unparse(header.target)} = item\n"
              f"    except Exception:\n        return {{}}\n"
              f"    return {{{', '.join(f'{n!r}: {n}' for n in names)}}}\n")
    scope: dict[str, Any] = {}
    exec(compile(source, "<labels>", "exec"), scope)
    return scope["labels"]


def parse_header(line: str, number: int | None = None) -> Header:
    """Read the magic's line: the loop header up to the first ` -x`/` --x` option, then options.
    `number` is the cell's execution count, which tracebacks show as `Cell In[number]`."""
    line = line.rstrip()
    head, options = _split_options(line)
    # Parse as a for statement whose columns line up with the cell's `%%parallel ` line.
    prefix = "for".ljust(len(MAGIC) + 1)
    try:
        loop = cast(ast.For, ast.parse(f"{prefix}{head}: pass").body[0])  # it starts with `for`
    except SyntaxError as exc:
        if not re.search(r"\bin\b", head):
            raise CellError(f"the header needs `in`: write `TARGET in ITERABLE [options]`, "
                            f"e.g. `{EXAMPLE}` (got `{line}`)") from None
        raise CellError(f"the header `{head}` is not valid Python ({exc.msg}); write "
                        f"`TARGET in ITERABLE [options]`, e.g. `{EXAMPLE}`") from None
    for node in ast.walk(loop.target):
        if not isinstance(node, (ast.Name, ast.Tuple, ast.List, ast.Starred, ast.expr_context)):
            raise CellError(f"the loop target `{ast.unparse(loop.target)}` must be a name or a "
                            "tuple of names, e.g. `x`, `a, b` or `i, row`")
    return Header(line, loop.target, loop.iter, options,
                  register(f"{MAGIC} {line}", number), number)


def _tokens(text: str) -> list[tokenize.TokenInfo]:
    try:
        return list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):  # unbalanced brackets: all of it is the header
        return []


def _split_options(line: str) -> tuple[str, str]:
    """Options start at the first `-` outside brackets, after a space, glued to a name or `-`."""
    tokens = _tokens(line)
    for i in _outside_brackets(tokens):
        tok = tokens[i]
        if tok.string == "-" and 0 < i < len(tokens) - 1:
            before, after = tokens[i - 1], tokens[i + 1]
            if before.end < tok.start and after.start == tok.end \
                    and (after.type == tokenize.NAME or after.string == "-"):
                return line[:tok.start[1]].rstrip(), line[tok.start[1]:]
    return line, ""


def _outside_brackets(tokens: list[tokenize.TokenInfo]) -> Iterator[int]:
    """Indices of the tokens that are not brackets and not inside brackets."""
    depth = 0
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.OP and tok.string in ("(", "[", "{"):
            depth += 1
        elif tok.type == tokenize.OP and tok.string in (")", "]", "}"):
            depth -= 1
        elif depth == 0:
            yield i


class ModuleRef:
    """A module shipped by name: it pickles as `importlib.import_module(name)`."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __reduce__(self) -> tuple[Callable, tuple[str]]:
        return importlib.import_module, (self.name,)

    def __repr__(self) -> str:
        return f"<module {self.name!r}, imported again on each engine>"


def compile_cell(header: Header, body: str, namespace: Mapping[str, Any]) -> types.FunctionType:
    """The task function of a cell, its free names taken from `namespace` (checked, not sent)."""
    if not body.strip():
        raise CellError(f"the cell has no body: write the task below the header, e.g.\n"
                        f"{EXAMPLE}\ny = x * x\n{{'x': x, 'y': y}}")
    filename = register(f"{MAGIC} {header.line}\n{body}", header.number)
    source = "\n" + body  # line numbers of the body are the cell's
    try:
        tree = ast.parse(source, filename)
        table = symtable.symtable(source, filename, "exec")
    except SyntaxError as exc:
        raise CellError("the cell has a syntax error; nothing was run.\n"
                        + _exception_text(exc)) from None
    targets = {n.id for n in ast.walk(header.target) if isinstance(n, ast.Name)}
    free = _free_names(table) - targets
    code = _function_code(header, tree, filename)
    shipped = _resolve(free, tree, namespace)
    _check_shippable(shipped, tree)
    lines = _first_lines(tree)
    warn_same_streams({name: (value, f"line {lines.get(name, '?')}")
                       for name, value in shipped.items()}, header.names[0])
    return types.FunctionType(code, {"__name__": "__main__", **shipped}, code.co_name)


def evaluate_iterable(header: Header, namespace: dict[str, Any]) -> Any:
    """The header's iterable, evaluated in the notebook (a missing name is a CellError)."""
    expression = ast.fix_missing_locations(ast.Expression(header.iterable))
    code = compile(expression, header.filename, "eval")
    try:
        return eval(code, namespace)
    except NameError as exc:
        raise CellError(f"{exc} (line 1, in the iterable `{header.iterable_source}`); "
                        "nothing was run") from None


def register(text: str, number: int | None = None) -> str:
    """Put the cell's text in linecache under a name IPython knows as cell `number`'s, so that
    tracebacks quote its lines as `Cell In[12], line 3`; outside IPython, a fresh name."""
    shell = get_ipython()
    if shell is not None:
        return shell.compile.cache(text, shell.execution_count if number is None else number)
    filename = f"<parallel-cell-{next(_cell_numbers)}>"
    lines = text.splitlines(keepends=True)
    linecache.cache[filename] = (len(text), None, lines, filename)  # mtime None: never evicted
    return filename


def _exception_text(exc: BaseException) -> str:
    return relabel("".join(traceback.format_exception_only(exc)).rstrip())


def _free_names(table: symtable.SymbolTable) -> set[str]:
    """Names the body reads as globals (at top level or in nested scopes) but never binds."""
    bound = {s.get_name() for s in table.get_symbols() if s.is_local()}
    read: set[str] = set()
    pending = [table]
    while pending:
        scope = pending.pop()
        pending.extend(scope.get_children())
        for symbol in scope.get_symbols():
            if symbol.is_declared_global() and symbol.is_assigned():
                bound.add(symbol.get_name())
            elif symbol.is_referenced() and (scope is table or symbol.is_global()):
                read.add(symbol.get_name())
    return read - bound


def _first_lines(tree: ast.AST) -> dict[str, int]:
    lines: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            lines[node.id] = min(lines.get(node.id, node.lineno), node.lineno)
    return lines


def _resolve(free: set[str], tree: ast.AST, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The notebook's value of each free name, modules as ModuleRef; builtins stay behind."""
    shipped: dict[str, Any] = {}
    missing = []
    for name in sorted(free):
        if name in namespace:
            value = namespace[name]
            shipped[name] = ModuleRef(value.__name__) if isinstance(value, types.ModuleType) \
                else value
        elif not hasattr(builtins, name):
            missing.append(name)
    if missing:
        lines = _first_lines(tree)
        missing.sort(key=lambda name: lines.get(name, 0))
        where = ", ".join(f"`{name}` (line {lines.get(name, '?')})" for name in missing)
        raise CellError(f"not defined in the notebook: {where}. Define or import it in an "
                        "earlier cell or in this cell; nothing was run")
    return shipped


def _check_shippable(shipped: dict[str, Any], tree: ast.AST) -> None:
    """Pickle the shipped values together once; on failure, name each one that cannot go
    (process-local state such as an open file is refused even where it would pickle)."""
    # Big values are left to the run's payload: pickled (and fingerprinted) once, there.
    small = {name: value for name, value in shipped.items() if not STORE.wants(value)}
    try:
        dumps(small)
        return
    except Exception:
        pass
    lines = _first_lines(tree)
    problems = [refusal(name, f"line {lines.get(name, '?')}", exc)
                for name, exc in unpicklable(small).items()]
    raise CellError("cannot send to the engines: " + "; ".join(problems) + ". Create it inside "
                    "the cell instead (open the file, the connection or the lock there); "
                    "nothing was run")


def _function_code(header: Header, tree: ast.Module, filename: str) -> types.CodeType:
    """`def <cell>(.item): TARGET = .item; BODY; return LAST_EXPRESSION`, with cell lines."""
    body = list(tree.body)
    if body and isinstance(body[-1], ast.Expr):
        body[-1] = ast.copy_location(ast.Return(body[-1].value), body[-1])
    bind = ast.Assign(targets=[header.target], value=ast.Name(_ITEM, ast.Load()))
    ast.copy_location(bind, header.target)
    function = cast(ast.FunctionDef, ast.parse("def _(item): pass").body[0])
    function.name = "<cell>"
    function.args.args[0].arg = _ITEM
    function.body = [bind, *body]
    module = ast.fix_missing_locations(ast.Module([function], type_ignores=[]))
    try:
        code = compile(module, filename, "exec")
    except SyntaxError as exc:  # only legal at module level, e.g. `from m import *`
        raise CellError("this cannot be used in a %%parallel cell; nothing was run.\n"
                        + _exception_text(exc)) from None
    code = next(c for c in code.co_consts if isinstance(c, types.CodeType))
    if code.co_flags & inspect.CO_GENERATOR:
        raise CellError("`yield` cannot be used at the top level of a %%parallel cell: the last "
                        "expression is the task's result; nothing was run")
    return code
