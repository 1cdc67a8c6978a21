"""Renders templates for authoring checks in a child process capped in memory and in time.

Fuel bounds a render's instructions, not its memory: a few string doublings or squarings
(`ns.s ~ ns.s` in a loop, `a|replace("a", a)`) build hundreds of MB in a handful of
instructions, and an allocation that fails inside minijinja's Rust core aborts the process
instead of raising. So the renders an author can steer with arbitrary data (the trial render of
a review, previews, proofs) run in one long-lived child per process, under RLIMIT_AS and a
wall-clock limit: a bomb kills the child, never the API process, and is reported as a problem
of the template. The child is an exec'd interpreter (not a fork of the threaded API process)
that imports only the engine; it is started on first use and again after it dies.
Delivery renders stay in-process for speed; the crash guard in delivery/queue.py covers them.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import pickle
import resource
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

from tidings.content.engine import RenderingError, TemplateEngine, TemplateProblem
from tidings.errors import Unavailable

TOO_MUCH_MEMORY = TemplateProblem(
    "the template uses too much memory: it builds text too large to render", "TooMuchMemory"
)
TOO_SLOW = TemplateProblem("the template takes too long to render", "TooSlow")
# Problems of size and time on sample data: refused when content is saved, not only at review.
RESOURCE_KINDS = frozenset({TOO_MUCH_MEMORY.kind, TOO_SLOW.kind, "TooLarge"})
CACHE_SIZE = 2048
# How long a check waits for the child while others' checks hold it, in multiples of the
# check's own time limit: past it, a 503 rather than a request thread held indefinitely.
WAIT_FOR_CHILD = 2.0

# One answer per template: its output (or "" when outputs were not asked for) or its problem.
Results = dict[str, "str | TemplateProblem"]


class TemplateSandbox:
    """The parent's handle on the child; one request at a time, safe to share across threads."""

    def __init__(self, memory_limit_mb: int, timeout_seconds: float) -> None:
        self.memory_limit_mb = memory_limit_mb
        self.timeout_seconds = timeout_seconds
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._connection: Connection | None = None
        self._verdicts: OrderedDict[bytes, Results] = OrderedDict()
        self.starts = 0

    def render(
        self,
        fuel: int,
        max_source_bytes: int,
        sources: Mapping[str, str],
        variables: Mapping[str, Any],
        *,
        outputs: bool,
    ) -> Results:
        """Renders each template (in order) in the child; verdicts without outputs are cached."""
        payload = pickle.dumps(
            (fuel, max_source_bytes, dict(sources), dict(variables), outputs),
            protocol=pickle.HIGHEST_PROTOCOL,
        )
        key = hashlib.blake2b(payload, digest_size=20).digest()
        if not self._lock.acquire(timeout=self.timeout_seconds * WAIT_FOR_CHILD):
            raise Unavailable("template checks are busy: retry in a moment")
        try:
            if not outputs:
                cached = self._verdicts.get(key)
                if cached is not None:
                    self._verdicts.move_to_end(key)
                    return dict(cached)
            results = self._exchange(payload, list(sources))
            # A timeout may be the machine's load rather than the template's, and a child's
            # death something from outside (the OOM killer): neither verdict is kept.
            if not outputs and not {TOO_SLOW, TOO_MUCH_MEMORY} & set(results.values()):
                self._verdicts[key] = results
                while len(self._verdicts) > CACHE_SIZE:
                    self._verdicts.popitem(last=False)
            return dict(results)
        finally:
            self._lock.release()

    def _exchange(self, payload: bytes, names: list[str]) -> Results:
        connection = self._connect()
        try:
            connection.send_bytes(payload)
        except OSError:
            # The child died between requests (killed from outside): a fresh one gets it.
            self._stop()
            connection = self._connect()
            try:
                connection.send_bytes(payload)
            except OSError:
                self._stop()
                raise Unavailable(
                    "template checks are unavailable: the checker did not start"
                ) from None
        results: Results = {}
        deadline = time.monotonic() + self.timeout_seconds
        # The child names each template before rendering it, so the one it dies on is known.
        current: str | None = None
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not connection.poll(left):
                    self._stop()
                    return _finish(results, names, current, TOO_SLOW)
                message = pickle.loads(connection.recv_bytes())
                if isinstance(message, str):
                    current = message
                    continue
                results.update(message)
                return results
        except (EOFError, OSError):
            self._stop()
            if current is None:
                # Dead before naming a template: it could not start (a memory limit below
                # what an interpreter needs, say), which is no verdict on the content.
                raise Unavailable(
                    "template checks are unavailable: the checker exited before rendering"
                ) from None
            return _finish(results, names, current, TOO_MUCH_MEMORY)

    def _connect(self) -> Connection:
        if self._child is not None and self._child.poll() is None and self._connection:
            return self._connection
        self._stop()
        parent_end, child_end = socket.socketpair()
        try:
            child = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tidings.content.sandbox",
                    str(child_end.fileno()),
                    str(self.memory_limit_mb),
                ],
                pass_fds=(child_end.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                # A Rust allocation failure prints a backtrace before aborting: not our log.
                stderr=subprocess.DEVNULL,
                # Out of the terminal's process group: Ctrl-C on `tidings serve` is the
                # parent's to handle, and the child ends when its socket closes.
                start_new_session=True,
                env={**os.environ, "RUST_BACKTRACE": "0"},
            )
        except OSError as exc:
            parent_end.close()
            raise Unavailable(f"template checks are unavailable: {exc.strerror}") from None
        finally:
            child_end.close()
        self._child = child
        self._connection = Connection(parent_end.detach())
        self.starts += 1
        return self._connection

    def _stop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._child is not None:
            if self._child.poll() is None:
                self._child.kill()
            self._child.wait()
            self._child = None

    def close(self) -> None:
        with self._lock:
            self._stop()


def _finish(
    results: Results, names: list[str], current: str | None, problem: TemplateProblem
) -> Results:
    """The answer when the child died or ran out of time while rendering `current`."""
    blamed = current if current is not None else names[0]
    return {**results, blamed: problem}


_shared: dict[tuple[int, float], TemplateSandbox] = {}
_shared_lock = threading.Lock()


def shared_sandbox(memory_limit_mb: int, timeout_seconds: float) -> TemplateSandbox:
    """The process's sandbox for these limits: tests build many runtimes, one child serves all."""
    with _shared_lock:
        key = (memory_limit_mb, timeout_seconds)
        sandbox = _shared.get(key)
        if sandbox is None:
            sandbox = _shared[key] = TemplateSandbox(memory_limit_mb, timeout_seconds)
            atexit.register(sandbox.close)
        return sandbox


def render_in(
    sandbox: TemplateSandbox | None,
    engine: TemplateEngine,
    sources: Mapping[str, str],
    variables: Mapping[str, Any],
    *,
    outputs: bool,
) -> Results:
    """Renders in the sandbox, or in this process when there is none (unit tests)."""
    if sandbox is not None:
        return sandbox.render(
            engine.fuel, engine.max_source_bytes, sources, variables, outputs=outputs
        )
    return _render_each(engine, sources, variables, outputs)


def _render_each(
    engine: TemplateEngine,
    sources: Mapping[str, str],
    variables: Mapping[str, Any],
    outputs: bool,
    announce: Any = None,
) -> Results:
    results: Results = {}
    try:
        compiled = engine.compile(sources)
    except RenderingError as exc:
        return {exc.template: exc.problem}
    data = compiled.prepare(variables)
    for name in sources:
        if announce is not None:
            announce(name)
        try:
            output = compiled.render(name, data, engine.max_output_chars)
        except RenderingError as exc:
            results[name] = exc.problem
        except MemoryError:
            results[name] = TOO_MUCH_MEMORY
        else:
            results[name] = output if outputs else ""
    return results


def _cap_memory(memory_limit_mb: int) -> None:
    """RLIMIT_AS at the limit, or at the hard limit where an operator set a lower one (systemd
    LimitAS=, ulimit -v); where none can be set, the child runs uncapped rather than refusing
    every template: a bomb then fails on the machine's memory, still in the child."""
    limit = memory_limit_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _serve(fd: int, memory_limit_mb: int) -> None:
    _cap_memory(memory_limit_mb)
    connection = Connection(fd)
    engines: dict[tuple[int, int], TemplateEngine] = {}

    def announce(name: str) -> None:
        connection.send_bytes(pickle.dumps(name, protocol=pickle.HIGHEST_PROTOCOL))

    while True:
        try:
            request = connection.recv_bytes()
        except (EOFError, OSError):
            return
        fuel, max_source_bytes, sources, variables, outputs = pickle.loads(request)
        engine = engines.get((fuel, max_source_bytes))
        if engine is None:
            engine = engines[(fuel, max_source_bytes)] = TemplateEngine(
                fuel=fuel, max_source_bytes=max_source_bytes, cache_size=64
            )
        results = _render_each(engine, sources, variables, outputs, announce)
        connection.send_bytes(pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL))
        if TOO_MUCH_MEMORY in results.values():
            return  # after a MemoryError the heap may be in any state: start afresh


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]))
