"""The run-directory lock: one writer at a time, an OS-released flock on RUN/.lock. Standard library
only, so the `vqvae2` command can refuse a second writer before it imports torch."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path


class RunDirBusy(Exception):
    """Another process is writing the run directory."""


_HELD_LOCKS: set[int] = set()  # descriptors of the run locks this process holds


def _drop_held_locks_in_child() -> None:
    # a forked child (DataLoader worker, prepare-data pool) shares the lock's open file; were it to keep it,
    # the lock would outlive a SIGKILLed holder until its children die
    for fd in _HELD_LOCKS:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_drop_held_locks_in_child)


class RunLock:
    """An exclusive advisory lock on RUN/.lock (flock), held while a command writes the run. The OS
    releases it when the holder exits or is killed, so a stale lock cannot outlive its process; the
    file keeps the holder's PID and command for the message a second writer gets."""

    def __init__(self, root: Path, command: str):
        self.root, self.command, self.fd = root, command, None

    @property
    def path(self) -> Path:
        return self.root / ".lock"

    def acquire(self) -> "RunLock":
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"run directory {self.root} is a file, not a directory")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and self.root.is_dir():
                return self  # a read-only run: nobody can write it, so there is nothing to lock; reading goes on
            raise ValueError(f"cannot write the run directory {self.root}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise ValueError(f"cannot lock the run directory {self.root}: {e.strerror}") from None
            raise self.busy() from None
        _HELD_LOCKS.add(fd)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        self.fd = fd
        return self

    def busy(self) -> RunDirBusy:
        return RunDirBusy(f"{self.root} is being written by {describe_holder(lock_holder(self.root))}; wait for it "
                          f"to end (or stop it), then run this command again")

    def refuse_if_held(self) -> None:
        """RunDirBusy when a live writer is recorded (checked without locking, before any other work)."""
        if lock_holder(self.root) is not None:
            raise self.busy()

    def release(self) -> None:
        if self.fd is not None:
            _HELD_LOCKS.discard(self.fd)
            os.ftruncate(self.fd, 0)  # no holder recorded while nobody holds it
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_holder(root: str | Path) -> dict | None:
    """The holder recorded in RUN/.lock while a writer holds it ({"pid", "host", "command", "started"}),
    or None; read without locking, so readers never wait."""
    try:
        holder = json.loads((Path(root) / ".lock").read_text() or "null")
    except (OSError, ValueError):
        return None
    if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int):
        return None
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return None  # killed before it could clear the file; the OS released its lock
        except PermissionError:
            pass
    return holder


def describe_holder(holder: dict | None) -> str:
    """A lock_holder(...) record in words."""
    if holder is None:
        return "another process"
    return f"PID {holder['pid']} on {holder.get('host', '?')} (`{holder.get('command', '?')}`, since {holder.get('started', '?')})"
