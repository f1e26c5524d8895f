"""A console a person can read: each stage's own progress and one-line result on the terminal,
everything else (third-party logging, warnings, native libraries' stderr) in the run's log file.

`quiet(log_file)` redirects the process's stderr and stdout file descriptors to the log for the
duration of a command, so that even C++ libraries (onnxruntime, the exporters) write there; edgeft's
own messages and progress bars go to a duplicate of the terminal taken before the redirect.
`-v` (verbose) leaves everything on the terminal.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Iterator

_console = None  # the terminal, while quiet() redirects stderr


def say(message: str) -> None:
    """One line for the person at the terminal."""
    stream = _console or sys.stderr
    print(message, file=stream, flush=True)


def terminal():
    """Where progress bars go: the terminal even while stderr is redirected to the log."""
    return _console or sys.stderr


def progress(total: int, desc: str, unit: str, enabled: bool = True, **kwargs):
    """A progress bar on the terminal; redrawn at most every 30 s when the terminal is a pipe or a
    file (a CI log), so that a long stage leaves a few lines there, not thousands of redraws."""
    from tqdm.auto import tqdm

    stream = terminal()
    interactive = hasattr(stream, "isatty") and stream.isatty()
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=stream, dynamic_ncols=interactive,
                mininterval=0.1 if interactive else 30, **kwargs)


@contextlib.contextmanager
def quiet(log_file: Path, verbose: bool = False) -> Iterator[None]:
    """Send everything but edgeft's own messages to `log_file` while the block runs."""
    global _console
    if verbose or _console is not None:
        yield
        return
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    target = open(log_file, "a", buffering=1)
    root, handlers, level = logging.getLogger(), None, None
    try:
        _console = os.fdopen(os.dup(saved[1]), "w", buffering=1)
        os.dup2(target.fileno(), 1)
        os.dup2(target.fileno(), 2)
        handlers, level = root.handlers[:], root.level
        root.handlers = [logging.StreamHandler(target)]  # a library's basicConfig() is then a no-op
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        if _console is not None:
            _console.close()
        _console = None
        if handlers is not None:
            root.handlers, root.level = handlers, level
        logging.captureWarnings(False)
        target.close()
