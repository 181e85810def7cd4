"""The one supervisor: it reads the services table and starts, waits for, stops and restarts processes.

Each service runs in its own process group (so `down` stops whatever it forked too), its output
appended to .stack/logs/<name>.log and its leader's pid in .stack/run/<name>.pid. Only processes
whose pid file this stack wrote are ever signalled.

`up` after a crash: a service whose recorded process group no longer runs (killed, crashed, or a
zombie nobody has reaped yet) is started afresh at once, after its ports have closed, its pid file
and the lock files it left (``Service.leftovers``: Solr's write.lock, HDFS's in_use.lock) are
removed. One that runs but does not answer yet is waited for, unless its processes go away
meanwhile.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from deploy.stack import ROOT, StackError
from deploy.stack.health import port_in_use
from tinytags.settings import StackSettings

HEALTHY, STARTED = "healthy", "started"


@dataclass
class Service:
    """One row of the services table: how to start a process and how to know that it answers."""

    name: str
    command: Sequence[object]  # str() of each part at launch (see launchers.AtLaunch)
    ports: tuple[int, ...]  # must be free before a start; the first is the one that says it runs
    url: str  # what `up` and `status` print
    ready: Callable[[], bool]  # the health check (deploy/stack/health.py)
    group: str = ""  # what --only names it by besides its name (spark, cloud, yarn)
    # Services that start first, and what they must be by then: HEALTHY (answering) or STARTED
    # (launched: this one copes with waiting, e.g. a NodeManager retries its ResourceManager).
    depends_on: dict[str, str] = field(default_factory=dict)
    env: dict[str, object] = field(default_factory=dict)  # added to this process's environment
    timeout: float = 120.0
    # What a killed process leaves behind under the stack dir (globs): cleared before a fresh start.
    leftovers: tuple[str, ...] = ()


def pid_file(settings: StackSettings, name: str) -> Path:
    """Where a service's leader pid is recorded."""
    return settings.stack_dir / "run" / f"{name}.pid"


def log_file(settings: StackSettings, name: str) -> Path:
    """Where a service's output goes."""
    return settings.stack_dir / "logs" / f"{name}.log"


def recorded_pid(settings: StackSettings, name: str) -> int | None:
    """The pid in the service's pid file (alive or not), or None when there is none."""
    try:
        return int(pid_file(settings, name).read_text().strip())
    except (OSError, ValueError):
        return None


def running_pid(settings: StackSettings, name: str) -> int | None:
    """The pid of the service when this stack started it and its process group still runs."""
    pid = recorded_pid(settings, name)
    return pid if pid is not None and group_alive(pid) else None


def start_order(services: Sequence[Service]) -> list[Service]:
    """The services with each one after those it depends on (dependencies outside the list are
    ignored: `--only` never pulls more in); otherwise in table order. Stop order is the reverse."""
    names = {s.name for s in services}
    placed: list[Service] = []
    left = list(services)
    while left:
        done = {s.name for s in placed}
        ready = next((s for s in left if all(d in done for d in s.depends_on if d in names)), None)
        if ready is None:
            raise StackError(f"dependency cycle among {[s.name for s in left]}")
        placed.append(ready)
        left.remove(ready)
    return placed


def up(settings: StackSettings, services: Sequence[Service], started: list[str]) -> Iterator[str]:
    """Start what is not running, in dependency order, yielding each service's status line once it
    answers; the names of the processes started are appended to ``started`` as they start.

    Services start in waves: every service whose HEALTHY dependencies answer, and whose STARTED ones
    were launched (in this wave or before), starts at once; the wave is awaited before the next.
    Independent JVMs (HDFS, Solr, the Spark master, ZooKeeper) so come up side by side instead of
    one after another.
    """
    names = {s.name for s in services}
    left = start_order(services)
    healthy: set[str] = set()
    while left:
        wave: list[Service] = []
        for service in left:
            launched = healthy | {s.name for s in wave}
            if all(dep not in names or dep in (healthy if need == HEALTHY else launched)
                   for dep, need in service.depends_on.items()):
                wave.append(service)
        if not wave:  # start_order already refused cycles; a dependency that never answers raised
            raise StackError(f"cannot start {[s.name for s in left]}: their dependencies are not up")
        waiting = []
        for service in wave:
            finish, fresh = launch(settings, service)
            if fresh:
                started.append(service.name)
            waiting.append(finish)
        for service, finish in zip(wave, waiting):
            yield finish()
            healthy.add(service.name)
        left = [s for s in left if s not in wave]


def down(settings: StackSettings, services: Sequence[Service]) -> Iterator[str]:
    """Stop the services, dependants first, yielding a status line each."""
    for service in reversed(start_order(services)):
        yield stop(settings, service.name)


def status(settings: StackSettings, services: Sequence[Service]) -> tuple[list[str], int]:
    """A status line per service, and how many of them are not up and answering."""
    lines, down_count = [], 0
    for service in services:
        pid = running_pid(settings, service.name)
        if pid and service.ready():
            lines.append(f"{service.name:15} up (pid {pid})  {service.url}")
        elif pid:
            lines.append(f"{service.name:15} starting or unhealthy (pid {pid}); "
                         f"log: {log_file(settings, service.name)}")
            down_count += 1
        else:
            lines.append(f"{service.name:15} down")
            down_count += 1
    return lines, down_count


def start(settings: StackSettings, service: Service) -> str:
    """Start one service unless it already runs; wait until it answers. Returns a status line."""
    return launch(settings, service)[0]()


def launch(settings: StackSettings, service: Service) -> tuple[Callable[[], str], bool]:
    """Start one service unless it already runs, without waiting for its answer.

    Returns (a call that waits until it answers and returns the status line, whether a new
    process was started).
    """
    log = log_file(settings, service.name)
    previous = recorded_pid(settings, service.name)
    after_crash = ""
    if previous is not None:
        if group_alive(previous) and (service.ready() or wait_ready(settings, service, log, pgid=previous)):
            return (lambda: f"{service.name:15} already running  {service.url}"), False
        # Its processes are gone (killed, crashed) or went while we waited for an answer.
        after_crash = clear_after_exit(settings, service, previous)
    taken = [port for port in service.ports if port_in_use(port)]
    if taken:
        raise StackError(
            f"{service.name}: port 127.0.0.1:{taken[0]} is already in use by a process this stack did "
            f"not start; stop it or set another port (TINYTAGS_* variables, see tinytags/settings.py)"
        )
    command = [str(part) for part in service.command]
    for folder in (log.parent, pid_file(settings, service.name).parent):
        folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **{name: str(value) for name, value in service.env.items()}}
    with open(log, "ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(command)}\n".encode())
        out.flush()
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=ROOT, start_new_session=True,
        )
    pid_file(settings, service.name).write_text(str(process.pid))

    def finish() -> str:
        wait_ready(settings, service, log, process)
        return f"{service.name:15} started (pid {process.pid}){after_crash}  {service.url}"

    return finish, True


def clear_after_exit(settings: StackSettings, service: Service, pid: int, port_wait: float = 15.0) -> str:
    """Clean up after a service whose processes died: wait for its ports to close (a dying process may
    hold one a moment longer), remove its pid file and the lock files it left (Service.leftovers).

    Only called once no process of its group runs, so no lock removed here is still held.
    Returns a note for the status line.
    """
    deadline = time.monotonic() + port_wait
    while any(port_in_use(port) for port in service.ports) and time.monotonic() < deadline:
        time.sleep(0.2)
    pid_file(settings, service.name).unlink(missing_ok=True)
    removed = []
    for pattern in service.leftovers:
        for path in sorted(settings.stack_dir.glob(pattern)):
            path.unlink(missing_ok=True)
            removed.append(path)
    log = log_file(settings, service.name)
    if log.parent.is_dir():
        with open(log, "a") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} pid {pid} is gone; removed its pid file"
                      + "".join(f"\n    and {path}" for path in removed) + "\n")
    return f" after pid {pid} died; removed {len(removed)} stale lock file(s)"


def wait_ready(settings: StackSettings, service: Service, log: Path, process=None,
               pgid: int | None = None) -> bool:
    """Poll until the service answers (True); a dead process or a timeout is a StackError with the log.

    With pgid (a service started earlier, not answering yet), False as soon as no process of that
    group runs any more: the caller starts a fresh one instead of waiting out the timeout.
    """
    deadline = time.monotonic() + service.timeout
    while time.monotonic() < deadline:
        if service.ready():
            return True
        if pgid is not None and not group_alive(pgid):
            return False
        if process is not None and process.poll() is not None:
            pid_file(settings, service.name).unlink(missing_ok=True)
            raise StackError(
                f"{service.name}: exited with code {process.returncode} before answering; "
                f"log: {log}\n{_tail(log)}"
            )
        time.sleep(0.5)
    raise StackError(
        f"{service.name}: no answer at {service.url} after {service.timeout:.0f} s; log: {log}\n{_tail(log)}"
    )


def stop(settings: StackSettings, name: str, grace: float = 20.0) -> str:
    """Stop one service's whole process group by its recorded pid. Returns a status line."""
    pid = running_pid(settings, name)
    if pid is None:
        pid_file(settings, name).unlink(missing_ok=True)
        return f"{name:15} not running"
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and group_alive(pid):
        time.sleep(0.2)
    if group_alive(pid):
        os.killpg(pid, signal.SIGKILL)
        time.sleep(0.5)
    pid_file(settings, name).unlink(missing_ok=True)
    return f"{name:15} stopped (pid {pid})"


def group_alive(pgid: int) -> bool:
    """True while a process of the group runs; zombies (dead, not yet reaped) do not count."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader whose children are gone still "exists"; reap it if it is ours.
    try:
        finished, _ = os.waitpid(pgid, os.WNOHANG)
        if finished == pgid:
            return group_alive(pgid)
    except ChildProcessError:
        pass
    # Not ours (its parent, e.g. an earlier `up`, is gone): a zombie until init reaps it, which
    # may take a while or never happen in a container. /proc tells the dead from the running.
    states = _group_states(pgid)
    return states is None or any(state not in ("Z", "X") for state in states)


def _group_states(pgid: int) -> list[str] | None:
    """The state letter (R, S, D, Z, ...) of each process in the group, from /proc; None without /proc."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    states = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
        if len(fields) > 2 and int(fields[2]) == pgid:
            states.append(fields[0])
    return states


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text[-lines:])
