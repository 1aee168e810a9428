"""A throwaway OpenSSH server on 127.0.0.1 for the ssh target's tests (no pytest in here).

Everything lives in one folder: a host key and a client key made by ssh-keygen, authorized_keys,
known_hosts (already holding the host key, so nothing is learnt or asked), sshd_config, the pid
file and sshd's log. sshd runs in the foreground (`-D -e`) as the current user, who is the one
that logs in; `stop()` ends it.

    server = Sshd(folder).start()
    url = server.url()                    # ssh://root@127.0.0.1:PORT
    options = server.client_options()     # -F /dev/null -o UserKnownHostsFile=...
    server.identity                       # the client's private key
    server.stop()
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD = shutil.which("sshd") or shutil.which("sshd", path="/usr/sbin:/sbin")
SSH_KEYGEN = shutil.which("ssh-keygen")
SSH = shutil.which("ssh")
PRIVSEP_DIR = Path("/run/sshd")  # Debian's sshd refuses to start without it


def missing() -> str | None:
    """None when a server can be started here, else why not."""
    for name, path in (("sshd", SSHD), ("ssh-keygen", SSH_KEYGEN), ("ssh", SSH)):
        if path is None:
            return f"{name} is not installed (apt-get install openssh-server openssh-client)"
    if not PRIVSEP_DIR.is_dir():
        try:
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True)
        except OSError as exc:
            return f"sshd needs {PRIVSEP_DIR}, which cannot be created ({exc})"
    return None


def make_key(path: Path) -> Path:
    """A new ed25519 key pair without passphrase: `path` and `path.pub`."""
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
                   check=True, capture_output=True)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Sshd:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.host_key = make_key(self.folder / "host_key")
        self.identity = make_key(self.folder / "client_key")
        (self.folder / "authorized_keys").write_text((self.folder / "client_key.pub").read_text())
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.log = self.folder / "sshd.log"

    def _config(self) -> Path:
        config = self.folder / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}", f"PidFile {self.folder / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.folder / 'authorized_keys'}",
            "PubkeyAuthentication yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
            "UsePAM no",
            "StrictModes no",  # the tmp folder's permissions are the test runner's
            "AcceptEnv TMPDIR",  # lets a test choose where the remote temp folder goes
            "LogLevel VERBOSE", ""]))
        return config

    def start(self, attempts: int = 3, wait: float = 10.0) -> Sshd:
        """Start sshd on a free port; retry on another port if that one was taken meanwhile."""
        for _ in range(attempts):
            self.port = free_port()
            with open(self.log, "ab") as log:
                self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self._config())],
                                                stdout=log, stderr=log)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self.process.poll() is None:
                if self._banner():
                    self._write_known_hosts()
                    return self
                time.sleep(0.05)
            self.stop()
        raise RuntimeError(f"sshd did not start; its log: {self.log.read_text()[-2000:]}")

    def _banner(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                return conn.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    def _write_known_hosts(self) -> None:
        key = " ".join((self.folder / "host_key.pub").read_text().split()[:2])
        (self.folder / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {key}\n")

    def url(self, user: str | None = None) -> str:
        return f"ssh://{user or self.user}@127.0.0.1:{self.port}"

    def client_options(self) -> tuple:
        """ssh options for this server only: no user config, its own known_hosts."""
        return ("-F", "/dev/null", "-o", f"UserKnownHostsFile={self.folder / 'known_hosts'}",
                "-o", "StrictHostKeyChecking=yes")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> Sshd:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
