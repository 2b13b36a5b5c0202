"""MLflow in a process of its own, started when a run starts and fed through a pipe.

Why a second process: importing mlflow and opening its store take about 130 MB of memory and 2-3 s, and
the plot needs matplotlib. In the calling process they came on top of litellm and every record, and
they are what put a 10,000-item run over its memory budget. In a child started at the beginning, the
import and the store's schema check overlap the preparation and the calls, and their memory is freed
when the child exits. The calling process never imports mlflow or matplotlib during `run`.

The child runs in its own session and ignores Ctrl-C (the parent decides what an interrupt means), and
exits when its pipe closes, so a killed parent never leaves it behind.

`hand_off` is the one exception to the parent waiting: logging in the background. The parent gives the
child its last job and leaves; the child, whose pipe then closes, finishes the jobs it has and exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from harness.plan import Plan
from harness.scorers import Scorer


class TrackingError(RuntimeError):
    """The tracking process failed; the message is its error."""


class TrackingProcess:
    """A child process (`python -m harness.tracking_process`) that runs tracking functions sent to it.

    A plain subprocess with two pipes, not multiprocessing's spawn: spawn re-imports the caller's main
    script, which breaks any script that calls `run_experiment` without an `if __name__` guard.
    """

    def __init__(self) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "harness.tracking_process", str(to_child_r), str(from_child_w)],
            pass_fds=(to_child_r, from_child_w),
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a terminal's Ctrl-C goes to the parent, which decides what it means
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._send = os.fdopen(to_child_w, "wb")
        self._receive = os.fdopen(from_child_r, "rb")
        self._pending = 0
        self._detached = False
        self._in_call = False

    @property
    def pid(self) -> int:
        return self._process.pid

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
            raise TrackingError(f"the tracking process exited (code {self._process.poll()})") from None
        if not ok:
            raise TrackingError(value)
        return value

    def hand_off(self, function: Callable[..., Any], *args: Any) -> None:
        """`function(*args)` in the child, which finishes it after this process has gone on or exited.

        The arguments go through a file, not the pipe: a child still importing MLflow is not reading its
        pipe, and a 10,000-record payload would fill it and hold the parent until the child read it.
        """
        if self._process.poll() is not None:
            raise TrackingError(f"the tracking process exited (code {self._process.returncode})")
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
                raise TrackingError(f"the tracking process exited (code {self._process.poll()})") from None
            raise
        self._detached = True
        self.close()

    def abandon(self) -> None:
        """End a child whose run stopped before logging (refused, interrupted): it has nothing to do, and
        letting it finish importing MLflow would cost about 3 s of CPU for each refused config. A child
        in the middle of a call (logging when Ctrl-C came) is waited for as `close` does, so a run is
        never left half logged; a store's schema being created finishes first (`store.open_store`)."""
        if self._in_call or self._detached:
            self.close()
            return
        with contextlib.suppress(ProcessLookupError):
            self._process.terminate()
        self.close()

    def close(self) -> None:
        """Close the pipes (the child exits when it reads their end) and wait for it, unless it was handed
        work to finish on its own."""
        for stream in (self._send, self._receive):
            with contextlib.suppress(OSError):
                stream.close()
        if self._detached:
            return
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> TrackingProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(read_fd: int, write_fd: int) -> None:
    """The child's loop: run each function received, send back (ok, result or error message)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from harness.offline import apply_offline_defaults

    apply_offline_defaults()
    from harness.tracking.store import end_on_sigterm

    end_on_sigterm()
    import harness.tracking  # noqa: F401 - imported now, while the parent prepares

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
    scorers = [Scorer(s.name, _not_here, s.kind, dict(s.options)) for s in plan.scorers]
    return dataclasses.replace(plan, scorers=scorers)


def _not_here(output: str, item: Any) -> float:
    raise RuntimeError("scorers run in the calling process, not in the tracking process")


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
