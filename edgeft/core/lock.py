"""One `edgeft run` at a time per run folder: a lock file holding the owner's process id.

A second run on the same folder is refused, naming the lock and the process that holds it. A lock
left by a process that no longer exists (killed, machine restarted) is taken over.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Iterator

from edgeft import EdgeftError
from edgeft.core.console import say
from edgeft.runtime.files import RunLayout


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def holder(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[Path]:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = RunLayout(run_dir).lock
    mine = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            other = holder(path)
            if other and other.get("host") == mine["host"] and alive(int(other.get("pid", 0))):
                raise EdgeftError(f"run folder {run_dir} is in use by another edgeft run (lock {path}, process id "
                                  f"{other['pid']}): wait for it to finish, or stop that process") from None
            say(f"taking over the stale lock {path} (process id {other.get('pid') if other else '?'} is gone)")
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(mine, f)
        break
    else:
        raise EdgeftError(f"could not take the lock {path}")
    try:
        yield path
    finally:
        if holder(path) == mine:
            path.unlink(missing_ok=True)
