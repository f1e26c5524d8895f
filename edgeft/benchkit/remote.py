"""A shell on a device through any command prefix: `ssh user@host`, `ssh -p 2222 -i key pi@10.0.0.5`,
`adb shell`, `docker exec -i NAME`. Nothing is installed on the device to make this work: each step
is one `sh -c SCRIPT` through the prefix, and a bundle travels as a tar stream on its standard input.

ssh and adb hand the device's shell one command line (their arguments joined by spaces), so the
script goes as one quoted word; other prefixes (docker exec, kubectl exec) pass arguments on as
they are. A prefix is of the first kind when one of its words is `ssh` or `adb`.
"""
from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from edgeft.runtime.errors import EdgeftError

JOINING_SHELLS = ("ssh", "adb")  # these pass the device's shell one command line
SSH_UNREACHABLE = 255  # what ssh exits with when it cannot connect or authenticate


@dataclass
class Device:
    prefix: str

    def argv(self, script: str) -> list[str]:
        words = shlex.split(self.prefix)
        if not words:
            raise EdgeftError("--on: empty command prefix (for example --on \"ssh user@host\")")
        if any(os.path.basename(w) in JOINING_SHELLS for w in words):
            return [*words, "sh -c " + shlex.quote(script)]
        return [*words, "sh", "-c", script]

    def start(self, script: str) -> subprocess.Popen:
        """The prefix running `script`, with pipes for its standard streams (never this process's
        own stdin: ssh would read the user's terminal)."""
        try:
            return subprocess.Popen(self.argv(script), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
        except FileNotFoundError as e:
            raise EdgeftError(f"--on: cannot run `{self.prefix}`: {e.strerror}: {e.filename}") from None

    def run(self, script: str, what: str, stdin: bytes | None = None) -> str:
        """Run `script` on the device; its standard output, or one EdgeftError saying what failed."""
        proc = self.start(script)
        out, err = (x.decode(errors="replace") for x in proc.communicate(stdin or b""))
        if proc.returncode != 0:
            raise EdgeftError(self.explain(proc.returncode, err, what))
        return out

    def explain(self, code: int, stderr: str, what: str) -> str:
        last = (stderr.strip().splitlines() or ["(no message)"])[-1]
        if code == SSH_UNREACHABLE and "ssh" in self.prefix:
            return f"cannot reach the device with `{self.prefix}` ({what}): {last}"
        if "No space left" in stderr:
            return f"the device ran out of disk space ({what}): {last}; nothing was left behind"
        return f"{what} failed on the device (exit {code}): {last}"

    def send_folder(self, folder: Path, script: str, what: str) -> str:
        """Stream `folder` as a tar archive into `script`'s standard input (which unpacks it). Called
        once the device has answered, so a connection lost now is reported as a cut transfer."""
        proc = self.start(script)
        cut = None
        try:
            with tarfile.open(fileobj=proc.stdin, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for path in sorted(Path(folder).iterdir()):
                    tar.add(path, arcname=path.name, filter=_anonymous)
        except (BrokenPipeError, ConnectionResetError, OSError) as e:
            cut = e
        with contextlib.suppress(OSError):
            proc.stdin.close()
        proc.stdin = None  # closed here: communicate() only collects the output
        out, err = proc.communicate()
        out, err = out.decode(errors="replace"), err.decode(errors="replace")
        if proc.returncode != 0 or cut is not None:  # the device answered a moment ago: a lost link is a cut
            if "No space left" in err:
                raise EdgeftError(self.explain(proc.returncode, err, what))
            last = (err.strip().splitlines() or [str(cut or f"exit {proc.returncode}")])[-1]
            raise EdgeftError(f"{what} was cut before it completed ({last}); the device keeps nothing of it: run "
                              "the command again")
        return out


def _anonymous(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Files arrive owned by whoever unpacks them, not by this host's user ids."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
