"""`%%parallel` maps a cell's body over the engines; `%pp` starts, shows and stops the cluster.

Every check happens before anything is submitted: the header, the options, the body's syntax,
the names it needs and whether they can be sent. Bad input is a UsageError (one short message,
no traceback). Once submitted, failed tasks are data: the cell completes and binds its
DataFrame, with `error` / `timeout` / `lost` rows; `--raise` turns failures into an exception
after the display.
"""

from __future__ import annotations

import argparse
import keyword
import os
import threading
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, kwds, magic_arguments, parse_argstring
from IPython.display import display
from traitlets import Unicode, default

from . import api, cluster
from .cell import compile_cell, evaluate_iterable, header_labels, parse_header
from .cluster.launchers import LAUNCHERS, OPTIONS
from .errors import CellError, ClusterError, RunFailed, RunInterrupted
from .options import RunOptions, count, count_or_auto, flag, number, seconds
from .run import Run
from .snapshot import RunSnapshot
from .summary import failure_detail
from .views import FailureReport, background_notice, progress, widgets_available
from .views.comms import pumped
from .views.report import TRACEBACKS_HINT

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

WIDGET_POLL_S = 0.05
"""How often a foreground cell handles widget messages while it waits: a Cancel click acts
within about this (Run.wait's own tick may round it up to 0.1 s)."""


def _run_options(magic: Any) -> Any:
    """One magic argument per RunOptions field, named, explained and shown as the field says:
    the options are declared once, in options.py."""
    for option in reversed(fields(RunOptions)):
        meta = option.metadata
        help = meta["help"] + (" (a name in the notebook)" if meta["from_notebook"] else "")
        if meta["metavar"] is None:
            magic = argument(flag(option.name), action="store_true", help=help)(magic)
        else:
            magic = argument(flag(option.name), metavar=meta["metavar"], help=help)(magic)
    return magic


def _launcher_options(magic: Any) -> Any:
    """One `%pp start` argument per launcher option (`--partition`, `--hosts`, ...): the
    options are declared once, in cluster/launchers.py."""
    for name, option in reversed(OPTIONS.items()):
        magic = argument(flag(name), metavar=name.split("_")[0].upper(), help=option.help)(magic)
    return magic


def _plain_help(magic: Any) -> Any:
    """magic_arguments starts the help with `::` (a reST code block), which `%%parallel?`
    shows as it is: drop it, so the help starts with the usage line."""
    magic.__doc__ = magic.__doc__.replace("::\n\n  %", "%", 1)
    return magic


@magics_class
class ParallelMagics(Magics):
    """`%%parallel` runs a cell's body once per item on the engines; `%pp` manages them."""

    autostart = Unicode("", config=True, help=(
        "Start the local cluster in the background when the extension loads, so that the "
        "first %%parallel cell finds it ready: a number of engines, or 'auto'. Off by "
        "default (a login node or a scheduler's user must not get local engines unasked). "
        "Also read from the PP_NOTEBOOK_AUTOSTART environment variable."))

    @default("autostart")
    def _autostart_from_environment(self) -> str:
        return os.environ.get("PP_NOTEBOOK_AUTOSTART", "")

    cell_number: int | None = None
    """The execution count of the cell running now (IPython has already moved its own
    counter to the next cell's); None outside a cell run by `run_cell`."""

    @property
    def _shell(self) -> InteractiveShell:
        """The shell the magics were registered with (IPython types it as optional)."""
        assert self.shell is not None, "the magics are not registered with a shell"
        return self.shell

    def note_cell(self, info: Any) -> None:
        """`pre_run_cell` event: remember the number IPython gave the cell about to run."""
        stored = info.store_history and not info.silent
        self.cell_number = self._shell.execution_count - 1 if stored else \
            self._shell.execution_count

    def forget_cell(self, result: Any) -> None:
        """`post_run_cell` event: no cell is running any more."""
        self.cell_number = None

    @_plain_help
    @magic_arguments(name="%parallel")  # help and usage then say %%parallel
    @kwds(usage="%(prog)s TARGET in ITERABLE [options]")
    @argument("-o", "--out", metavar="NAME",
              help="bind the merged DataFrame to NAME instead of making it the cell's result; "
                   "with --background, NAME gets the Run")
    @argument("-n", "--engines", metavar="N",
              help="start the cluster with N engines first, or scale a running local one to N")
    @_run_options
    @argument("--background", action="store_true",
              help="return at once with the Run (the cell's result, or NAME with -o); "
                   "run.result() waits for it and gives the DataFrame")
    @argument("--no-widget", action="store_true",
              help="a text progress line instead of the widget")
    @argument("--quiet", action="store_true", help="no progress, summary or failures table")
    @argument("--raise", dest="raise_", action="store_true",
              help="after the display, raise RunFailed if any task did not succeed")
    @cell_magic
    def parallel(self, line: str, cell: str) -> Any:
        """Run the cell's body once per item of an iterable, in parallel on the engines.

        The first line is `%%parallel TARGET in ITERABLE [options]`. TARGET is bound to each
        item: a name, or unpacking such as `a, b in pairs`, `i, row in df.iterrows()` or
        `k, v in d.items()`. The body's last expression is the item's result; results are
        merged into one DataFrame (a dict is a row, a DataFrame its rows, anything else goes in
        a `result` column): first the names the header binds, then the result's columns, then
        status, engine, host, duration_s, attempts and error; the index is `task`, the item's
        position. The names the body reads are taken from the notebook and sent once per
        run; modules are imported again on the engines. Example::

            %%parallel x in range(100) -o df --timeout 30
            y = simulate(x)
            {"x": x, "y": y}

        Failed items are rows with their error, not an exception; their tracebacks are in
        `pp_notebook.last_run().errors()`. Interrupting the kernel cancels the run, keeps what
        finished (bound to NAME with -o) and ends the cell with RunInterrupted, a
        KeyboardInterrupt, so that "Run All" stops there.
        """
        run, args = self.submit(line, cell)
        if args.background:
            return self._background(run, args)
        return self._foreground(run, args)

    def submit(self, line: str, cell: str) -> tuple[Run, argparse.Namespace]:
        """Check the whole cell, then start its Run; bad input raises before anything runs."""
        namespace = self._shell.user_ns
        try:
            header = parse_header(line, self.cell_number)
            args = parse_argstring(self.parallel, header.options)
            _check_combination(args)
            engines = None if args.engines is None else count(number(args.engines), "-n")
            task = compile_cell(header, cell, namespace)
            given = {name: value for name, value in vars(args).items() if value is not None}
            options = RunOptions.from_text(given, lambda option, name: _lookup(namespace, name,
                                                                               option))
            items = evaluate_iterable(header, namespace)
        except CellError as exc:
            raise UsageError(str(exc)) from None
        except UsageError as exc:
            raise UsageError(f"{exc} (see %%parallel? for the options)") from None
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{exc} (see %%parallel? for the options)") from None
        try:
            if engines is not None:
                cluster.start(engines)
            run = api.submit(task, items, options, labels=header_labels(header))
        except (ClusterError, TypeError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        return run, args

    def _foreground(self, run: Run, args: argparse.Namespace) -> Any:
        """Wait with a live view; an interrupt (the stop button, or the dashboard's Cancel)
        keeps what finished, shows the summary, binds the results and then ends the cell as
        an interrupted cell (the queue stops here)."""
        view = None if args.quiet else progress(run, widget=not args.no_widget)
        try:
            interrupted = _wait(run)
        finally:
            if view is not None:
                view.stop()
        interrupted = interrupted or (view is not None and view.cancelled)
        if view is not None and not view.shows_failures:
            failures = FailureReport(run.errors(wait=not interrupted))
            if failures:
                display(failures)
        result = self._deliver(run.result(wait=not interrupted), args.out)
        if interrupted:
            where = f"`{args.out}`" if args.out else "pp_notebook.last_run().result()"
            raise RunInterrupted(run.interrupted_text(where), run)
        if args.raise_:
            snap = run.snapshot()
            if snap.failed:
                raise RunFailed(_failure_message(snap, args.out), run)
        return result

    def _background(self, run: Run, args: argparse.Namespace) -> Any:
        if not args.quiet:
            if not args.no_widget and widgets_available():
                progress(run)
            background_notice(run, f"`{args.out}`" if args.out else "this cell's result")
        return self._deliver(run, args.out)

    def _deliver(self, value: Any, out: str | None) -> Any:
        """Bind `value` to the -o name (the cell then shows nothing), or make it the result."""
        if out is None:
            return value
        self._shell.user_ns[out] = value
        return None

    @_plain_help
    @magic_arguments()
    @argument("command", choices=["start", "stop", "status", "connect", "scale"],
              help="start [N|auto]: a local cluster (or scale the running one); stop; status; "
                   "connect: a cluster started elsewhere; scale N|auto")
    @argument("engines", nargs="?",
              help="start, scale: the number of engines, or auto to follow the work")
    @argument("--launcher", choices=list(LAUNCHERS),
              help="start: what starts the engines (default local)")
    @_launcher_options
    @argument("--controller-ip", metavar="ADDR",
              help="start: the IP, host name or interface the engines reach the controller "
                   "at (default: loopback for local, this host's name otherwise)")
    @argument("--encrypt", choices=["yes", "no"],
              help="start: CurveZMQ (default: yes beyond loopback, no on it)")
    @argument("--register-timeout", metavar="S",
              help="start: seconds an engine (a job) may take to register before it is "
                   "given up (default 120)")
    @argument("--min", metavar="N", help="auto: engines kept when idle (default 1)")
    @argument("--max", metavar="N", help="auto: most engines (default: CPU count)")
    @argument("--idle", metavar="S",
              help="auto: seconds an engine may stay idle before it leaves (default 30)")
    @argument("--profile", default="default", help="connect: the cluster's IPython profile")
    @argument("--cluster-id", default="", help="connect: the cluster's id")
    @argument("--file", dest="connection_file", metavar="F",
              help="connect: the cluster's ipcontroller-client.json")
    @line_magic
    def pp(self, line: str) -> None:
        """Manage the kernel's cluster: `%pp start [N]`, `stop`, `status`, `connect`, `scale N`."""
        try:
            args = parse_argstring(self.pp, line)
        except ValueError as exc:  # shlex: an unbalanced quote
            raise UsageError(f"{exc} in `%pp {line}`") from None
        try:
            engines = None if args.engines is None else \
                count_or_auto(number(args.engines), "the number of engines")
            adaptive: dict[str, Any] = {
                name: check(number(text), option) for name, text, check, option in (
                    ("min_engines", args.min, count, "--min"),
                    ("max_engines", args.max, count, "--max"),
                    ("idle_timeout", args.idle, seconds, "--idle")) if text is not None}
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if engines is not None and args.command not in ("start", "scale"):
            raise UsageError(f"`%pp {args.command}` takes no number of engines")
        if args.command == "scale" and engines is None:
            raise UsageError("`%pp scale N` needs the number of engines, e.g. `%pp scale 4`, "
                             "or auto")
        if engines != "auto" and adaptive:
            raise UsageError("--min, --max and --idle go with `auto`, e.g. "
                             "`%pp start auto --max 8`")
        connecting = args.connection_file or args.cluster_id or args.profile != "default"
        if connecting and args.command != "connect":
            raise UsageError("--profile, --cluster-id and --file go with `%pp connect`")
        starting = _start_options(args)
        if starting and args.command != "start":
            raise UsageError(f"{', '.join(flag(name) for name in starting)} go with "
                             "`%pp start`, e.g. `%pp start 4 --launcher slurm --partition P`")
        try:
            if args.command == "stop":
                before = cluster.status()
                cluster.stop()
                print(_stop_text(before))
                return
            if args.command == "start":
                state = cluster.start(engines, **adaptive, **starting)
            elif args.command == "connect":
                state = cluster.connect(args.cluster_id, args.profile,
                                        connection_file=args.connection_file)
            elif args.command == "scale":
                assert engines is not None  # refused above: `%pp scale` needs a number
                state = cluster.scale(engines, **adaptive)
            else:  # status
                state = cluster.status()
        except (ClusterError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        print(cluster_status_text(state))


def _start_options(args: argparse.Namespace) -> dict[str, Any]:
    """`%pp start`'s launcher and cluster options that were given, as `cluster.start` takes
    them."""
    given = {name: getattr(args, name) for name in ("launcher", "controller_ip", *OPTIONS)
             if getattr(args, name) is not None}
    if args.encrypt is not None:
        given["encrypt"] = args.encrypt == "yes"
    if args.register_timeout is not None:
        given["register_timeout"] = seconds(number(args.register_timeout),
                                            "--register-timeout")
    return given


def _wait(run: Run) -> bool:
    """Wait for the run while the front-end's widget messages (the dashboard's Cancel) are
    still handled; True when an interrupt cancelled it."""
    try:
        with pumped() as handle_widget_messages:
            while not run.wait(WIDGET_POLL_S):
                handle_widget_messages()
    except RunInterrupted:  # the stop button: Run.wait has cancelled the rest
        return True
    except KeyboardInterrupt:  # it landed while messages were handled, between two waits
        run.cancel()
        run.wait()
        return True
    return False


def _check_combination(args: argparse.Namespace) -> None:
    if args.out is not None and (not args.out.isidentifier() or keyword.iskeyword(args.out)):
        raise UsageError(f"-o needs a Python name, got {args.out!r}")
    if args.background and args.raise_:
        raise UsageError("--raise cannot go with --background: nothing has failed yet when the "
                         "cell returns; check run.errors() after run.wait()")


def _lookup(namespace: dict, name: str, option: str) -> Any:
    if name not in namespace:
        raise UsageError(f"{option} {name}: no such name in the notebook")
    return namespace[name]


def _failure_message(snap: RunSnapshot, out: str | None) -> str:
    detail = failure_detail(snap.counts)
    where = f"the results are in `{out}`, " if out else ""
    return (f"{snap.failed} of {snap.total} tasks did not succeed ({detail}); "
            f"{where}{TRACEBACKS_HINT}")


def cluster_status_text(state: dict) -> str:
    """The cluster as `%pp status` prints it: its id, and each engine's state and process."""
    if not state["running"]:
        if state.get("lost"):
            return (f"{state['lost']}: `%pp start [N]` starts a local cluster"
                    + ("" if state["local"] else ", or `%pp connect` to this one once it is back"))
        return "no cluster is running: `%pp start [N]` starts a local one"
    engines = state["engines"]
    kind = (state.get("launcher") or "local") if state["local"] else "connected"
    plural = "s" if len(engines) != 1 else ""
    adaptive = state.get("adaptive")
    follows = (f", adaptive {adaptive['min_engines']}–{adaptive['max_engines']}"
               if adaptive else "")
    lines = [f"cluster {state['cluster_id']} ({kind}{follows}): {len(engines)} engine{plural}"]
    lines += [f"  engine {e['id']}: {e['state']}, pid {e['pid']} on {e['host']}"
              + (f", job {e['job']}" if e.get("job") else "") for e in engines]
    if state.get("waiting"):
        lines.append(f"  {state['waiting']} more starting")
    lines += [f"  not granted: {one['reason']}" for one in state.get("not_granted", ())]
    return "\n".join(lines)


def _stop_text(state: dict) -> str:
    if not state["running"]:
        return "no cluster was running"
    if state["local"]:
        return f"stopped cluster {state['cluster_id']} and its {len(state['engines'])} engines"
    return f"disconnected from cluster {state['cluster_id']} (it keeps running)"


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext pp_notebook`: register the `%%parallel` and `%pp` magics, and follow which
    cell runs (tracebacks name it `Cell In[N]`)."""
    magics = ParallelMagics(ipython)
    ipython.register_magics(magics)
    ipython.events.register("pre_run_cell", magics.note_cell)
    ipython.events.register("post_run_cell", magics.forget_cell)
    if magics.autostart:
        engines = count_or_auto(number(magics.autostart), "autostart (PP_NOTEBOOK_AUTOSTART)")
        if cluster.current_or_none() is None:
            _start_in_background(engines)


def _start_in_background(engines: int | str) -> None:
    """Start the local cluster on a thread: the first cell that needs it waits for it (a
    failed start is started again, and reported, by that cell)."""
    threading.Thread(target=lambda: _quietly(cluster.start, engines),
                     name="pp_notebook-autostart", daemon=True).start()


def _quietly(start: Any, engines: int | str) -> None:
    try:
        start(engines)
    except Exception:  # the first cell that needs the cluster starts it and says why not
        pass
