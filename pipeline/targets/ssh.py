"""The `ssh://user@host[:port]` target: the parity runner on a real board over SSH.

The board needs only sh, tar, mktemp and a Python >= 3.9 with numpy and a TFLite runtime. One
`ssh` call (the system OpenSSH client, non-interactive) carries everything: a tar stream on stdin
holds the files the runner reads plus the `device_tests` package; the remote shell unpacks them
into a fresh `mktemp -d` folder, runs the runner there, writes a tar of results.json and
outputs/ on stdout, and removes the folder when it exits. When the run does not end that way
(time limit, lost connection, Ctrl-C) a second short call kills the runner and removes the folder.

Calls to one board share one authenticated connection (OpenSSH multiplexing: ControlMaster,
ControlPersist) through a socket in the cache folder, `~/.cache/edgepipe/ssh` ($EDGEPIPE_CACHE
moves it): a pool's chunks (pool.py) and the clean-up call log in once.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from ...core.errors import EdgepipeError
from ...device_tests.schema import OUTPUTS, RunFolder, target_folder
from .base import Target, cache_root, device_tests_dir, runner_args, runner_reads

FORM = "ssh://user@host[:port]"
PREFIX = "ssh://"
# The board's scratch folder: the runner writes its results file there and its outputs beside it.
_RESULTS = RunFolder.RESULTS
# Lines the remote script writes to stderr for us; removed from what the caller sees.
MARK = "@edgepipe "
# The board's Python runs this instead of `-m device_tests.runner` directly: same runner, but a
# Python or numpy that cannot run it is named (exit 3, 4) rather than shown as a traceback, and
# there is one process to kill. Python 2 must be able to parse it.
_BOOT = (
    "import sys\n"
    "if sys.version_info < (3, 9):\n"
    "    sys.stderr.write('@edgepipe python %d.%d\\n' % sys.version_info[:2]); sys.exit(3)\n"
    "sys.path.insert(0, '')\n"  # device_tests is in the cwd, even under PYTHONSAFEPATH
    "import importlib.util, runpy\n"
    "if importlib.util.find_spec('numpy') is None:\n"
    "    sys.stderr.write('@edgepipe numpy missing\\n'); sys.exit(4)\n"
    "sys.argv = ['device_tests.runner'] + sys.argv[1:]\n"
    "runpy.run_module('device_tests.runner', run_name='__main__', alter_sys=True)\n")
# What sh on the board runs (dash, bash or busybox ash); the fields are filled in quoted.
_SCRIPT = """\
d=$(mktemp -d "${{TMPDIR:-/tmp}}/edgepipe.XXXXXX") || exit 90
echo "@edgepipe dir $d" >&2
trap 'rm -rf "$d"; echo "@edgepipe removed" >&2' EXIT
trap 'exit 129' HUP
trap 'exit 143' TERM
cd "$d" && tar -xf - || exit 91
{python} -c {boot} {args} </dev/null >&2 &
pid=$!
echo "@edgepipe pid $pid" >&2
wait "$pid"; code=$?
if [ -f {results} ]; then
  if [ -d {outputs} ]; then tar -cf - {results} {outputs}; else tar -cf - {results}; fi
fi
exit "$code"
"""
_UNREACHABLE = ("Could not resolve hostname", "Connection refused", "timed out",
                "No route to host", "Network is unreachable", "Connection reset",
                "Connection closed by", "Name or service not known", "kex_exchange_identification")
_AUTH = ("Permission denied", "Too many authentication failures", "No more authentication")
# The runner's RuntimeUnavailable messages (device_tests/interpreters.py).
_NO_RUNTIME = re.compile(r"TFLite interpreter|^(ai_edge_litert|tflite_runtime|tensorflow) is "
                         r"(not installed|installed but does not import)")
_SAFE_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_SAFE_HOST = re.compile(r"^[A-Za-z0-9_:][A-Za-z0-9._%:-]*$")  # never a leading "-" (an option)
# A master connection outlives its last call by this long (seconds): the next call reuses it.
PERSIST = 60
# ssh expands %-tokens in a ControlPath and splits it at blanks: a folder with other characters
# gets no multiplexing rather than a mangled path.
_SAFE_PATH = re.compile(r"^[A-Za-z0-9._/+-]+$")
# A socket path must fit sockaddr_un (104 bytes on macOS, 108 on Linux); ssh first binds the
# socket under a name 17 characters longer.
_SOCKET_ROOM = 104 - 17


@dataclass(frozen=True)
class SshTarget:
    user: str | None  # None: ssh's default (~/.ssh/config, else the local user name)
    host: str
    port: int | None  # None: ssh's default (~/.ssh/config, else 22)

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port or 22}"


def parse_url(text: str) -> SshTarget:
    """`ssh://user@host[:port]` -> SshTarget; EdgepipeError for anything else."""

    def bad(why: str) -> EdgepipeError:
        return EdgepipeError(f"Expected a target {FORM}. Received: {text!r} ({why}); write it "
                             f"as ssh://pi@raspberrypi.local or ssh://pi@192.168.1.20:2222")

    try:
        parts = urlsplit(str(text))
        port = parts.port
    except ValueError as exc:
        raise bad(f"{exc}; the port must be a number from 1 to 65535") from None
    if parts.scheme != "ssh":
        raise bad("it does not start with ssh://")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise bad("nothing may follow the host and port")
    if parts.password is not None:
        raise bad("passwords are not supported: use a key, with --ssh-identity or ssh-agent")
    user, host = parts.username, parts.hostname
    if not host or not _SAFE_HOST.match(host):
        raise bad("no host name, or one with characters a host name cannot have")
    if user is not None and not _SAFE_USER.match(user):
        raise bad("the user name is empty or has characters a user name cannot have")
    if port == 0:
        raise bad("port 0; the port must be a number from 1 to 65535")
    return SshTarget(user, host, port)


def _runner_files(bundle_dir: Path, only=None) -> list:
    """(archive name, local path) of what the runner reads for the entries `only` (default:
    all; base.runner_reads), and the device_tests package. The bundle is checked here first,
    as the runner would."""
    from ...device_tests.bundle import BundleError

    try:
        names = runner_reads(bundle_dir, only)
    except BundleError as exc:
        raise EdgepipeError(str(exc)) from None
    files = [(f"bundle/{name}", Path(bundle_dir) / name) for name in names]
    package = device_tests_dir()
    files += [(f"device_tests/{p.name}", p) for p in sorted(package.glob("*.py"))]
    return files


def _write_upload(files: list, stream) -> None:
    """A plain ustar archive (busybox tar reads it), folders first, every file a regular one."""
    now = int(time.time())
    folders = sorted({str(d) for name, _ in files for d in PurePosixPath(name).parents} - {"."})
    with tarfile.open(fileobj=stream, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, now
            tar.addfile(info)
        for name, path in files:
            data = path.read_bytes()  # follows an in-bundle symlink: the board gets the bytes
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, now
            tar.addfile(info, io.BytesIO(data))


def _write_atomic(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    with os.fdopen(handle, "wb") as stream:
        stream.write(data)
    os.replace(temp, path)


def _unpack_results(archive, out_json: Path, folder: str, url: str) -> bool:
    """Write the results file as `out_json` and outputs/<folder>/<id>.npy beside it. Only those
    names, as regular files, are taken: a hostile archive cannot write anywhere else."""
    results = None
    outputs = (OUTPUTS, folder)
    with tarfile.open(fileobj=archive, mode="r:") as tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts
            if member.isdir() and parts in (outputs[:1], outputs):
                continue
            if member.isfile() and parts == (_RESULTS,):
                results = tar.extractfile(member).read()
            elif (member.isfile() and len(parts) == 3 and parts[:2] == outputs
                  and parts[2] not in ("..", ".") and parts[2].endswith(".npy")):
                data = tar.extractfile(member).read()
                _write_atomic(data, out_json.parent / OUTPUTS / folder / parts[2])
            else:
                raise EdgepipeError(f"The results archive from {url} holds {member.name!r}, "
                                    f"which the runner never writes; refused it. Check the "
                                    f"board's tar and the runner copied there")
    if results is not None:
        _write_atomic(results, out_json)  # last: it names the outputs written before it
    return results is not None


def socket_folder() -> Path | None:
    """The folder of the master connections' sockets, made private (0700), or None when it
    cannot be (no usable cache folder): the calls then each log in."""
    folder = cache_root().absolute() / "ssh"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.lstat()
        if not folder.is_dir() or folder.is_symlink() or info.st_uid != os.geteuid():
            return None  # a socket there would be someone else's to hijack
        if info.st_mode & 0o077:
            folder.chmod(0o700)
    except OSError:
        return None
    return folder if _SAFE_PATH.match(str(folder)) else None


def _multiplexing(target: SshTarget, identity, ssh_options) -> list:
    """The options that make calls with the same login share one connection. The socket's name
    holds the identity and the user's options too: a call with another key or another
    known_hosts must log in itself, not ride a connection authenticated otherwise."""
    folder = socket_folder()
    if folder is None:
        return []
    login = [socket.gethostname(), target.user, target.host, target.port,
             str(identity) if identity else None, list(map(str, ssh_options))]
    path = f"{folder}/{hashlib.sha256(json.dumps(login).encode()).hexdigest()[:32]}"
    if len(path) > _SOCKET_ROOM:
        return []
    return ["-o", "ControlMaster=auto", "-o", f"ControlPersist={PERSIST}",
            "-o", f"ControlPath={path}"]


def close_connection(url: str, identity=None, ssh_options=()) -> None:
    """Ask the master connection to `url` (if any) to take no more calls; it ends when its
    last call does, so a concurrent run's call is not cut."""
    try:
        ssh = _ssh_command(parse_url(url), identity, ssh_options, 5)
    except EdgepipeError:
        return
    if not any(arg.startswith("ControlPath=") for arg in ssh):
        return
    end = ssh.index("--")
    try:
        subprocess.run([*ssh[:end], "-O", "stop", *ssh[end:]], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _ssh_command(target: SshTarget, identity, ssh_options, connect_timeout) -> list:
    ssh = shutil.which("ssh")
    if ssh is None:
        raise EdgepipeError("The ssh target needs the OpenSSH client `ssh`, not found on PATH; "
                            "apt-get install openssh-client")
    # For each option ssh keeps the first value it is given: BatchMode (never prompt) comes
    # first and always holds; the user's options come before our defaults and win over them.
    cmd = [ssh, "-T", "-o", "BatchMode=yes", *map(str, ssh_options)]
    if identity is not None:
        identity = Path(identity).expanduser()
        if not identity.is_file():
            raise EdgepipeError(f"The SSH key {identity} does not exist; pass the private key "
                                f"file with --ssh-identity (e.g. ~/.ssh/id_ed25519)")
        cmd += ["-i", str(identity), "-o", "IdentitiesOnly=yes"]
    cmd += [*_multiplexing(target, identity, ssh_options),
            "-o", f"ConnectTimeout={max(1, math.ceil(connect_timeout))}",
            "-o", "StrictHostKeyChecking=accept-new",
            # A board that dies mid-run ends the call within a minute, not at the time limit.
            "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
    if target.port:
        cmd += ["-p", str(target.port)]
    if target.user:
        cmd += ["-l", target.user]
    return [*cmd, "--", target.host]


def _sh_word(word: str) -> str:
    """One word for the remote sh, quoted; a leading ~/ still means the board's home."""
    if word.startswith("~/"):
        return '"$HOME"/' + shlex.quote(word[2:])
    return shlex.quote(word)


def _remote_command(python: str, name: str, extra_args) -> str:
    words = shlex.split(python)  # `env -i /opt/py/bin/python3` is a command, quoted word by word
    if not words:
        raise EdgepipeError("The board's Python is empty; set [targets] ssh_python (e.g. "
                            "python3 or /home/pi/venv/bin/python)")
    args = ["bundle", "--out", _RESULTS, "--target", name, "--save-outputs",
            *map(str, extra_args)]
    script = _SCRIPT.format(python=" ".join(map(_sh_word, words)), boot=shlex.quote(_BOOT),
                            args=" ".join(map(shlex.quote, args)), results=_RESULTS,
                            outputs=OUTPUTS)
    return "sh -c " + shlex.quote(script)  # sh: the login shell may be fish or csh


def _split_stderr(text: str) -> tuple:
    """(our markers as {key: value}, the rest of stderr)."""
    marks, rest = {}, []
    for line in text.splitlines():
        if line.startswith(MARK):
            key, _, value = line[len(MARK):].partition(" ")
            marks[key] = value
        else:
            rest.append(line)
    return marks, "\n".join(rest) + ("\n" if rest else "")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("error:", "ssh:"))
              or "Error" in line.split(":")[0]]
    return (errors or lines or ["(no message)"])[-1]


def _cleanup(ssh: list, marks: dict, connect_timeout: float) -> bool:
    """Kill the runner and remove the remote folder after an interrupted run; True when done."""
    folder, pid = marks.get("dir", ""), marks.get("pid", "")
    if "removed" in marks or not folder.startswith("/") or "/edgepipe." not in folder:
        return "removed" in marks
    kill = f"kill -TERM {pid} 2>/dev/null; " if pid.isdigit() else ""
    try:
        done = subprocess.run([*ssh, f"{kill}rm -rf {shlex.quote(folder)}"],
                              stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=connect_timeout + 30)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def _ssh_failure(target: SshTarget, url: str, stderr: str) -> EdgepipeError:
    """What went wrong before the remote script started (ssh exited 255)."""
    line = _last_line(stderr).rstrip(".")
    if any(text in line for text in _AUTH):
        who = target.destination
        return EdgepipeError(f"SSH authentication failed for {who} ({url}): {line}; pass the "
                             f"key with --ssh-identity ([targets] ssh_identity), load it into "
                             f"ssh-agent, or install yours on the board with ssh-copy-id {who}")
    if "Host key verification failed" in stderr or "IDENTIFICATION HAS CHANGED" in stderr:
        return EdgepipeError(f"The host key of {target.address} does not match the one in "
                             f"known_hosts ({url}); if the board was reinstalled, remove the "
                             f"old key with ssh-keygen -R {target.host} and run again")
    if any(text in line for text in _UNREACHABLE):
        return EdgepipeError(f"Cannot reach {target.address} ({url}): {line}; check the "
                             f"address, that sshd runs there, and the port")
    return EdgepipeError(f"ssh to {target.address} failed ({url}): {line}")


def _remote_failure(url: str, python: str, code: int, marks: dict, stderr: str):
    """The EdgepipeError for a run that produced no results.json."""
    line = _last_line(stderr).removeprefix("error: ")
    on = f"on {url}"
    if "dir" not in marks:
        return EdgepipeError(f"The board did not start the run {on} (exit {code}): {line}; it "
                             f"needs sh, mktemp, tar and a writable $TMPDIR or /tmp")
    if code == 91:
        return EdgepipeError(f"Could not unpack the bundle {on} ({line}); the board needs tar "
                             f"and free space in $TMPDIR or /tmp")
    if code in (126, 127):
        return EdgepipeError(f"No Python at {python!r} {on} ({line}); set [targets] ssh_python "
                             f"(--ssh-python) to the board's Python 3.9+ (e.g. python3 or "
                             f"/home/pi/venv/bin/python)")
    if code == 3 and "python" in marks:
        return EdgepipeError(f"{python} {on} is Python {marks['python']}; the runner needs "
                             f"Python 3.9 or newer: point [targets] ssh_python at one")
    if code == 4 and "numpy" in marks:
        return EdgepipeError(f"numpy is not installed for {python} {on}; on the board: "
                             f"{python} -m pip install numpy ai-edge-litert (or tflite-runtime "
                             f"'numpy<2')")
    if _NO_RUNTIME.search(line):
        return EdgepipeError(f"No TFLite runtime for {python} {on}: {line}; on the board: "
                             f"{python} -m pip install ai-edge-litert (or tflite-runtime "
                             f"'numpy<2')")
    return EdgepipeError(f"The parity runner failed {on} (exit {code}): {line}")


def run_runner(url: str, bundle_dir: Path, out_json: Path, *, python: str = "python3",
               identity: Path | None = None, ssh_options: tuple = (), timeout: float = 1800,
               connect_timeout: float = 10, debug: bool = False, extra_args=(),
               name: str | None = None, only=None) -> subprocess.CompletedProcess:
    """Run `device_tests.runner` on the board at `url` on the bundle in `bundle_dir`; writes
    `out_json` and `out_json.parent/outputs/<target folder>/<id>.npy`, its records and that
    folder named after the target `name` (default: the URL; a pool's name). Returns the
    runner's exit code (0 all passed, 1 some failed: results written) and its stderr; everything
    else raises a one-line EdgepipeError. `timeout` bounds the whole call, copies included.
    `only`: the entries `extra_args` asks for, whose files alone are copied (default: all)."""
    target = parse_url(url)
    out_json = Path(out_json)
    files = _runner_files(Path(bundle_dir), only)
    ssh = _ssh_command(target, identity, ssh_options, connect_timeout)
    if debug:
        extra_args = (*extra_args, "--debug")
    name = name or url
    cmd = [*ssh, _remote_command(python, name, extra_args)]
    if debug:
        print(f"ssh target: {shlex.join(cmd[:-1])} 'sh -c ...'", file=sys.stderr)
    with tempfile.TemporaryFile() as upload, tempfile.TemporaryFile() as download, \
            tempfile.TemporaryFile() as errors:
        _write_upload(files, upload)
        upload.seek(0)
        done, cleaned = None, True
        try:
            done = subprocess.run(cmd, stdin=upload, stdout=download, stderr=errors,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:  # also on Ctrl-C: the board must not keep the runner and the folder
            errors.seek(0)
            marks, stderr = _split_stderr(errors.read().decode("utf-8", "replace"))
            if "dir" in marks and "removed" not in marks:
                cleaned = _cleanup(ssh, marks, connect_timeout)
        if debug and stderr:
            sys.stderr.write(stderr)
        if done is None:
            left = "" if cleaned else f"; could not remove {marks['dir']} there, remove it by hand"
            raise EdgepipeError(f"The ssh target {url} did not finish within its time limit "
                                f"([targets] timeout = {timeout:g} s){left}; raise the limit or "
                                f"run fewer entries")
        if done.returncode == 255 and "dir" not in marks:
            raise _ssh_failure(target, url, stderr)
        fetched = False
        if done.returncode in (0, 1) and os.fstat(download.fileno()).st_size > 0:
            download.seek(0)
            try:
                fetched = _unpack_results(download, out_json, target_folder(name), url)
            except tarfile.TarError as exc:
                raise EdgepipeError(f"The results archive from {url} is damaged ({exc}); run "
                                    f"again") from None
        if not fetched:
            if done.returncode == 255:  # the connection broke after the script had started
                raise EdgepipeError(f"The connection to {target.address} was lost during the "
                                    f"run ({url}): {_last_line(stderr)}; check the board and "
                                    f"the network, then run again")
            raise _remote_failure(url, python, done.returncode, marks, stderr)
    return subprocess.CompletedProcess(cmd, done.returncode, "", stderr)


def identity_of(options) -> Path | None:
    """The [targets] ssh_identity key file, `~` expanded; None: ssh's own."""
    return Path(options.ssh_identity).expanduser() if options.ssh_identity else None


class SshBoard(Target):
    """A real board over SSH; the registry's instance stands for every board (its name is the
    URL form), `named` gives the one at a URL."""

    description = "a real board over SSH: copy the bundle and the runner, run, fetch"

    def __init__(self, url: str = FORM):
        self.name = url

    def claims(self, name):
        return name.startswith(PREFIX)

    def named(self, name):
        parse_url(name)
        return SshBoard(name)

    def availability(self):
        if shutil.which("ssh") is None:
            return "the OpenSSH client is not installed: apt-get install openssh-client"
        return None  # a board: whether it answers is only known by trying

    def sessions(self, workers):
        return 1  # a board gets one session at a time

    def stage_key(self, options):
        return options.ssh_python

    def _run(self, run_dir, out_json, options, only, debug):
        return run_runner(self.name, run_dir, out_json, python=options.ssh_python,
                          identity=identity_of(options),
                          ssh_options=tuple(options.ssh_options), timeout=options.timeout,
                          extra_args=runner_args(options, only), debug=debug, only=only)


TARGET = SshBoard()
