"""MLflow in a process of its own, started when a run starts and fed through a pipe.

Why a second process: importing mlflow and opening its store cost memory and seconds of CPU, and the plot
needs matplotlib (benchmarks/README.md has the figures). In the calling process they came on top of litellm
and every record, and they are what put a 10,000-item run over its memory budget. In a child started at the
beginning, the import and the store's schema check overlap the preparation and the calls, and their memory
is freed when the child exits. The calling process never imports mlflow or matplotlib during `run`.

The child runs in its own session and ignores Ctrl-C (the parent decides what an interrupt means), and
exits when its pipe closes, so a killed parent never leaves it behind.

`hand_off` is the one exception to the parent waiting: logging in the background. The parent gives the
child its last job and leaves; the child, whose pipe then closes, finishes the jobs it has and exits.

A process that tracks several runs (a notebook, a script looping over configs, a test suite) pays MLflow's
import once, not once per run: tracking processes come from a `Launcher`, a process that imports MLflow
and matplotlib, then waits. Asked for a tracking process, it forks its successor (the next launcher, which
inherits the imports) and becomes the tracking process itself, in the asking process's working directory,
environment and stdout/stderr. Each run still gets a process of its own that starts with no MLflow state
and ends with the run; only the imports are shared. Where forking an imported process is not safe (macOS
frameworks), the launcher serves one run and has no successor, which is the plain subprocess again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from harness.offline import apply_offline_defaults
from harness.plan import Plan
from harness.scorers import Scorer
from harness.tracking.job import import_logging
from harness.tracking.store import end_on_sigterm


class TrackingError(RuntimeError):
    """The tracking process failed; the message is its error."""


FORKS = hasattr(os, "fork") and hasattr(socket, "send_fds") and sys.platform.startswith("linux")
"""Whether launchers fork successors. Not on macOS, where a process forked after importing system
frameworks (as `requests` does for proxy settings) can crash."""

_PID = struct.Struct("!q")
_HEADER = struct.Struct("!Q")


class Launcher:
    """A process that has imported MLflow and serves the next tracking process, by forking a successor
    and then becoming that tracking process.

    `next_pid` is the pid of the process that will serve the next request: the one started here at
    first, then each successor, which sends its pid once forked. A launcher that died (killed, or spent
    without a successor) shows as the end of the socket, and a new one is started.
    """

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "harness.tracking_process", "--launcher", str(theirs.fileno()), str(int(FORKS))],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a terminal's Ctrl-C goes to the parent, which decides what it means
        )
        theirs.close()
        self._socket = ours
        self.owner = os.getpid()
        self.next_pid: int | None = self._process.pid
        self._first = True

    def launch(
        self, read_fd: int, write_fd: int, stdout: int, stderr: int
    ) -> tuple[int, subprocess.Popen[bytes] | None]:
        """A tracking process reading jobs from `read_fd` and answering on `write_fd`: its pid, and the
        Popen to wait for when it is this process's own child (the first one served). Raises OSError or
        EOFError when the launcher is gone."""
        pid = self.successor()
        try:
            cwd: str | None = os.getcwd()
        except OSError:  # the directory was removed under this process: the launcher's own will do
            cwd = None
        payload = pickle.dumps((cwd, dict(os.environ)), protocol=pickle.HIGHEST_PROTOCOL)
        socket.send_fds(self._socket, [_HEADER.pack(len(payload))], [read_fd, write_fd, stdout, stderr])
        self._socket.sendall(payload)
        self.next_pid = None
        child = self._process if self._first else None
        self._first = False
        return pid, child

    def successor(self) -> int:
        """The pid of the process that serves the next request; a successor sends it once forked (at
        once, unless the launcher is still importing). Raises EOFError when the launcher is gone."""
        if self.next_pid is None:
            self._socket.settimeout(120)
            try:
                data = self._socket.recv(_PID.size, socket.MSG_WAITALL)
            except TimeoutError:
                data = b""
            finally:
                self._socket.settimeout(None)
            if len(data) < _PID.size:
                raise EOFError("the launcher exited")
            (self.next_pid,) = _PID.unpack(data)
        return self.next_pid

    def close(self) -> None:
        """Its end of the socket: the waiting successor exits."""
        self._socket.close()


@contextlib.contextmanager
def _output() -> Iterator[tuple[int, int]]:
    """This process's stdout and stderr descriptors as a child started now would inherit them; the null
    device for one that is closed (a daemon), as the tracking process must still be able to write."""
    opened = []
    chosen = []
    for fd in (1, 2):
        try:
            os.fstat(fd)
            chosen.append(fd)
        except OSError:
            opened.append(os.open(os.devnull, os.O_WRONLY))
            chosen.append(opened[-1])
    try:
        yield chosen[0], chosen[1]
    finally:
        for fd in opened:
            os.close(fd)


_LAUNCHER: Launcher | None = None
_LAUNCHER_LOCK = threading.Lock()


def launch(read_fd: int, write_fd: int, stdout: int, stderr: int) -> tuple[int, subprocess.Popen[bytes] | None]:
    """A tracking process from this process's launcher, started (again) if it has none or it died."""
    global _LAUNCHER
    with _LAUNCHER_LOCK:
        if _LAUNCHER is not None and _LAUNCHER.owner != os.getpid():
            _LAUNCHER = None  # inherited through a fork: its socket is the parent's, never read or closed here
        for attempt in range(2):
            if _LAUNCHER is None:
                _LAUNCHER = Launcher()
            try:
                return _LAUNCHER.launch(read_fd, write_fd, stdout, stderr)
            except (OSError, EOFError):
                _LAUNCHER.close()
                _LAUNCHER = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


class TrackingProcess:
    """A child process that runs tracking functions sent to it through two pipes.

    Not multiprocessing's spawn: spawn re-imports the caller's main script, which breaks any script that
    calls `harness.run` without an `if __name__` guard. The process comes from the `Launcher`.
    """

    def __init__(self) -> None:
        with _output() as (stdout, stderr):  # first: a closed 1 or 2 must not be taken by a pipe
            to_child_r, to_child_w = os.pipe()
            from_child_r, from_child_w = os.pipe()
            try:
                self._pid, self._child = launch(to_child_r, from_child_w, stdout, stderr)
            except BaseException:
                for fd in (to_child_w, from_child_r):
                    os.close(fd)
                raise
            finally:
                os.close(to_child_r)
                os.close(from_child_w)
        self._send = os.fdopen(to_child_w, "wb")
        self._receive = os.fdopen(from_child_r, "rb")
        self._pending = 0
        self._detached = False
        self._in_call = False

    @property
    def pid(self) -> int:
        return self._pid

    def _exited(self) -> str:
        """How the process ended, for an error message ("" while it runs)."""
        if self._child is not None:
            code = self._child.poll()
            return "" if code is None else f" (code {code})"
        return "" if _alive(self._pid) else " (ended)"

    def start(self, function: Callable[..., Any], *args: Any) -> None:
        """`function(*args)` in the child without waiting: work that only warms the child (imports, the
        store's schema check) overlaps what the parent does meanwhile. Its result is never read."""
        try:
            pickle.dump((function, args), self._send, protocol=pickle.HIGHEST_PROTOCOL)
            self._send.flush()
        except BrokenPipeError:
            return  # the next `call` reports the exit
        self._pending += 1

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """`function(*args)` in the child (a module-level function, picklable arguments)."""
        try:
            for _ in range(self._pending):  # replies to `start`: a failed warm-up shows again in this call
                pickle.load(self._receive)
            self._pending = 0
            self._in_call = True
            pickle.dump((function, args), self._send, protocol=pickle.HIGHEST_PROTOCOL)
            self._send.flush()
            ok, value = pickle.load(self._receive)
            self._in_call = False
        except (EOFError, BrokenPipeError):
            raise TrackingError(f"the tracking process exited{self._exited() or ' (ended)'}") from None
        if not ok:
            raise TrackingError(value)
        return value

    def hand_off(self, function: Callable[..., Any], *args: Any) -> None:
        """`function(*args)` in the child, which finishes it after this process has gone on or exited.

        The arguments go through a file, not the pipe: a child still importing MLflow is not reading its
        pipe, and a 10,000-record payload would fill it and hold the parent until the child read it.
        """
        ended = self._exited()
        if ended:
            raise TrackingError(f"the tracking process exited{ended}")
        handle, path = tempfile.mkstemp(prefix="harness-logging-", suffix=".pickle")
        try:
            with os.fdopen(handle, "wb") as payload:
                pickle.dump((function, args), payload, protocol=pickle.HIGHEST_PROTOCOL)
            pickle.dump((run_handed_off, (path,)), self._send, protocol=pickle.HIGHEST_PROTOCOL)
            self._send.flush()
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(path)
            if isinstance(exc, BrokenPipeError):
                raise TrackingError(f"the tracking process exited{self._exited() or ' (ended)'}") from None
            raise
        self._detached = True
        self.close()

    def abandon(self) -> None:
        """End a child whose run stopped before logging (refused, interrupted): it has nothing to do, and
        letting it finish importing MLflow would spend seconds of CPU on each refused config. A child
        in the middle of a call (logging when Ctrl-C came) is waited for as `close` does, so a run is
        never left half logged; a store's schema being created finishes first (`store.open_store`)."""
        if self._in_call or self._detached:
            self.close()
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGTERM)
        self.close()

    def close(self) -> None:
        """Close the pipes (the child exits when it reads their end) and wait for it, unless it was handed
        work to finish on its own."""
        for stream in (self._send, self._receive):
            with contextlib.suppress(OSError):
                stream.close()
        if self._detached:
            return
        if self._child is not None:
            try:
                self._child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait()
        elif not _wait_gone(self._pid, 60):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)

    def __enter__(self) -> TrackingProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    """Wait for a process that is not this one's child (a launcher's) to end; whether it did."""
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):  # no pidfd (old kernel): look every 50 ms
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True
    try:
        poller = select.poll()  # not select.select, which fails on descriptors above 1023
        poller.register(handle, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    finally:
        os.close(handle)


def run_launcher(fd: int, forks: bool) -> None:
    """The launcher's loop. Each request (a header, the tracking process's pipes, stdout and stderr, then
    the working directory and environment) is served by this process, after it forked a successor that
    sends its pid and waits for the next request. The end of the socket (the parent exited) ends it.

    First, what every tracking process it becomes inherits: Ctrl-C is the parent's to handle, SIGTERM
    ends it (see `end_on_sigterm`), and MLflow and the plotting library are imported."""
    import gc

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    apply_offline_defaults()

    end_on_sigterm()
    import_logging()

    # The imports are long-lived: out of the collector's sight, its passes in a forked process neither
    # walk them nor write to their pages (which would copy each page the fork shares).
    gc.freeze()
    channel = socket.socket(fileno=fd)
    while True:
        try:
            header, fds, _, _ = socket.recv_fds(channel, _HEADER.size, 4, socket.MSG_WAITALL)
        except OSError:
            os._exit(0)
        if len(header) < _HEADER.size or len(fds) != 4:
            os._exit(0)
        (size,) = _HEADER.unpack(header)
        payload = bytearray()
        while len(payload) < size:
            chunk = channel.recv(min(size - len(payload), 1 << 20))
            if not chunk:
                os._exit(0)
            payload += chunk
        if forks and os.fork() == 0:  # the successor: the next request is its own
            for handle in fds:
                os.close(handle)
            with contextlib.suppress(OSError):
                channel.sendall(_PID.pack(os.getpid()))
            continue
        channel.close()
        become(fds, bytes(payload))


def become(fds: list[int], payload: bytes) -> None:
    """This process as the tracking process a request asked for: the asker's directory, environment and
    output, then its jobs until the pipe closes. Never returns."""
    import fcntl  # POSIX, as forking is

    try:
        # Above 2 first: in a launcher started without stdout or stderr, a received pipe may sit on 1 or 2.
        moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, 3) for fd in fds]
        for fd in fds:
            os.close(fd)
        cwd, environment = pickle.loads(payload)
        with contextlib.suppress(OSError):
            os.setsid()  # a successor shares the launcher's session; a tracking process has its own
        if cwd is not None:
            with contextlib.suppress(OSError):  # removed or unreadable since: logging needs no directory
                os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environment)
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        os.dup2(moved[2], 1)
        os.dup2(moved[3], 2)
        os.close(moved[2])
        os.close(moved[3])
        if sys.stdout is None or sys.stderr is None:  # started without them: the asker's are there now
            sys.stdout = sys.stdout or open(1, "w", closefd=False)  # noqa: SIM115 - the process's own stream
            sys.stderr = sys.stderr or open(2, "w", closefd=False)  # noqa: SIM115
        serve(moved[0], moved[1])
    finally:
        os._exit(1)  # `serve` exits itself; this is only reached if it raised


def serve(read_fd: int, write_fd: int) -> None:
    """The tracking process's loop: run each function received, send back (ok, result or error message)."""

    apply_offline_defaults()  # the asker's environment may lack what this process needs
    listening = True
    with os.fdopen(read_fd, "rb") as receive, os.fdopen(write_fd, "wb") as send:
        while True:
            try:
                function, args = pickle.load(receive)
            except EOFError:
                break
            try:
                reply = (True, function(*args))
            except Exception as exc:  # reported to the parent, which raises it there
                reply = (False, f"{type(exc).__name__}: {exc}")
            if not listening:
                continue
            try:
                pickle.dump(reply, send, protocol=pickle.HIGHEST_PROTOCOL)
                send.flush()
            except BrokenPipeError:
                # The parent stopped listening: it was refused before its calls, or it handed its logging
                # off and left. The jobs already received are still done.
                listening = False
        with contextlib.suppress(BrokenPipeError):
            send.close()
    # Every write above was synchronous and is committed; the interpreter's own shutdown (MLflow's and
    # SQLAlchemy's exit hooks) would only keep the parent waiting in `close` for about a second.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_handed_off(path: str) -> Any:
    """The child's side of `hand_off`: the job written to `path`, which is removed once read."""
    with open(path, "rb") as payload:
        function, args = pickle.load(payload)
    os.unlink(path)
    return function(*args)


def portable(plan: Plan) -> Plan:
    """The plan without its scoring functions (closures cannot cross a process boundary)."""
    scorers = [Scorer(s.label, _not_here, s.kind, dict(s.options)) for s in plan.scorers]
    return dataclasses.replace(plan, scorers=scorers)


def _not_here(output: str, item: Any) -> float:
    raise RuntimeError("scorers run in the calling process, not in the tracking process")


if __name__ == "__main__":
    run_launcher(int(sys.argv[2]), sys.argv[3] == "1")
