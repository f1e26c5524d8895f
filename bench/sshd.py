"""A real OpenSSH server on 127.0.0.1, started from a temp folder with throwaway keys: the "device"
of the ssh tests (and of bench/device_roundtrip.py). Needs Debian's openssh-server and
openssh-client (.ci/run installs them when missing)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    path.unlink(missing_ok=True)
    Path(f"{path}.pub").unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


class LocalSshd:
    """sshd -D on a free port; `prefix(key)` is the ssh command line that logs in with a client key.
    Extra client keys may carry authorized_keys options (a PATH without python3, say)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.key = keygen(self.folder / "client_key")
        self.authorized = self.folder / "authorized_keys"
        self.authorized.write_text((self.folder / "client_key.pub").read_text())
        host_key = keygen(self.folder / "host_key")
        self.config = self.folder / "sshd_config"
        self.config.write_text(f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
                               f"AuthorizedKeysFile {self.authorized}\nPidFile {self.folder / 'sshd.pid'}\n"
                               "PermitRootLogin prohibit-password\nPasswordAuthentication no\nStrictModes no\n"
                               "UsePAM no\nPermitUserEnvironment yes\nLogLevel ERROR\n")
        self.process = None

    def add_key(self, name: str, options: str) -> Path:
        key = keygen(self.folder / name)
        with open(self.authorized, "a") as f:
            f.write(f"{options} {(self.folder / (name + '.pub')).read_text()}")
        return key

    def prefix(self, key: Path | None = None, port: int | None = None) -> str:
        return (f"ssh -p {port or self.port} -i {key or self.key} -o StrictHostKeyChecking=no "
                f"-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes -o ConnectTimeout=10 "
                f"{os.environ.get('USER') or 'root'}@127.0.0.1")

    def __enter__(self) -> "LocalSshd":
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # its privilege separation folder
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stderr=open(self.folder / "sshd.log", "w"))
        deadline = time.time() + 15
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.folder / 'sshd.log').read_text()}")
            time.sleep(0.1)
        raise RuntimeError("sshd did not start listening")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(10)
