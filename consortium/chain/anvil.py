"""A local anvil node that the CLI starts, stops and inspects, with its state kept on disk.

The node outlives the command that started it (it runs in its own session), so everything
that describes it lives in files under ``<data_dir>/anvil/``: the pid, the log and the chain
state. anvil loads the state file on start and rewrites it every second and on SIGTERM, so
stop and start keep blocks, receipts, logs, code and balances.

Historical states (``eth_call`` at a block before the last restart), which the auditor reads
to check each round's standing as of its block, are kept only by an archive node
(``archive=True``: anvil's ``--preserve-historical-states``). Its state file grows by about
140 kB per block, and writing it takes time (1.8 s for 57 MB, about 420 blocks), so an
archive node rewrites it every minute instead of every second, and is given longer to write
it when stopped. A node killed without SIGTERM loses at most its last minute of blocks; the
coordinator resends an anchor the node lost.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from consortium.errors import ChainUnavailable, UsageError
from consortium.files import write_text_atomically

ANVIL_ENV = "CONSORTIUM_ANVIL"
NPM_BINARY = Path("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
DEFAULT_CHAIN_ID = 31337
STATE_INTERVAL, ARCHIVE_STATE_INTERVAL = 1, 60  # seconds between state-file dumps
STOP_TIMEOUT, ARCHIVE_STOP_TIMEOUT = 10.0, 120.0  # seconds to write the state file and exit


@dataclass(frozen=True)
class NodeStatus:
    """What ``consortium chain status`` reports."""

    running: bool
    pid: int | None
    url: str
    chain_id: int | None
    block_number: int | None
    state_file: Path
    foreign_pid: int | None = None  # a live process the pid file names that is not this node


class AnvilNode:
    """The anvil node of one data directory."""

    def __init__(
        self,
        data_dir: Path,
        host: str = "127.0.0.1",
        port: int = 8545,
        chain_id: int = DEFAULT_CHAIN_ID,
        balance_ether: int | None = None,
        *,
        archive: bool = False,
        block_time: float | None = None,
    ) -> None:
        """``balance_ether`` overrides anvil's 10,000 ether per development account, for
        long test sessions that fund many fresh accounts from one faucet. ``archive`` keeps
        every block's state across restarts (module docstring). ``block_time`` mines a block
        every so many seconds instead of one per transaction, as a production network does."""
        self.dir = Path(data_dir) / "anvil"
        self.balance_ether = balance_ether
        self.archive = archive
        self.block_time = block_time
        self.host = host
        self.port = port
        self.chain_id = chain_id
        self.state_file = self.dir / "state.json"
        self.log_file = self.dir / "anvil.log"
        self.pid_file = self.dir / "anvil.pid"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, wait: bool = True, timeout: float = 30.0) -> NodeStatus:
        """Starts the node unless it is already running; with ``wait``, returns once it
        answers JSON-RPC."""
        if self._running_pid() is not None:
            return self.status()
        if _port_in_use(self.host, self.port):
            raise UsageError(
                f"port {self.port} on {self.host} is in use by another program; "
                "stop it or configure another anvil port"
            )
        binary = find_anvil()
        self.dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(binary),
            "--host", self.host,
            "--port", str(self.port),
            "--chain-id", str(self.chain_id),
            "--state", str(self.state_file),
            "--state-interval", str(ARCHIVE_STATE_INTERVAL if self.archive else STATE_INTERVAL),
            *(["--preserve-historical-states"] if self.archive else []),
            *(["--balance", str(self.balance_ether)] if self.balance_ether else []),
            *(["--block-time", f"{self.block_time:g}"] if self.block_time else []),
        ]  # fmt: skip
        with self.log_file.open("ab") as log:
            log.write(f"\n# {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(command)}\n".encode())
            log.flush()
            pid = _spawn(command, log.fileno())
        write_text_atomically(self.pid_file, f"{pid}\n")
        if wait:
            self._wait_until_ready(pid, timeout)
        return self.status()

    def stop(self, timeout: float | None = None) -> bool:
        """Stops the node; False if it was not running.

        SIGTERM first, on which anvil writes its state file; SIGKILL only if it does not exit
        within ``timeout`` seconds (by default longer for an archive node's larger file).
        A live process that the pid file names but that is not this node (another program
        that got the pid after a reboot, or another configuration's anvil) is never
        signalled: that is refused, and the process and the pid file are left as they are.
        """
        pid = self._running_pid()
        if pid is None:
            self._refuse_foreign()
            return False
        os.kill(pid, signal.SIGTERM)
        if timeout is None:
            timeout = ARCHIVE_STOP_TIMEOUT if self.archive else STOP_TIMEOUT
        if not _wait_for_exit(pid, timeout):
            os.kill(pid, signal.SIGKILL)
            _wait_for_exit(pid, 5.0)
        self.pid_file.unlink(missing_ok=True)
        return True

    def status(self) -> NodeStatus:
        """Whether the node runs, and its chain id and height if it answers."""
        pid = self._running_pid()
        chain_id = block_number = None
        if pid is not None:
            try:
                chain_id = int(_rpc(self.url, "eth_chainId"), 16)
                block_number = int(_rpc(self.url, "eth_blockNumber"), 16)
            except (requests.RequestException, ValueError, KeyError):
                pass  # running but not answering (starting up, or hung): report what we know
        return NodeStatus(
            running=pid is not None,
            pid=pid,
            url=self.url,
            chain_id=chain_id,
            block_number=block_number,
            state_file=self.state_file,
            foreign_pid=None if pid is not None else self._foreign_pid(),
        )

    def describe_foreign(self, pid: int) -> str:
        """Why process ``pid``, which the pid file names, is not this node."""
        command = " ".join(_command_line(pid))[:200] or "no command line"
        return (
            f"{self.pid_file} names process {pid} ({command}), which is not this "
            f"configuration's anvil (port {self.port}, state {self.state_file})"
        )

    def _refuse_foreign(self) -> None:
        pid = self._foreign_pid()
        if pid is not None:
            raise UsageError(
                f"{self.describe_foreign(pid)}: left running; remove the pid file if the node "
                "is gone"
            )

    def _recorded_pid(self) -> int | None:
        """The live process the pid file names, whatever it is; removes a stale pid file."""
        self._require_directory()
        try:
            pid = int(self.pid_file.read_text().strip())
        except FileNotFoundError:
            return None
        except ValueError:
            pid = None
        if pid is not None and _command_line(pid):
            return pid
        # Gone, or exiting (its command line already released): either way not running.
        self.pid_file.unlink(missing_ok=True)
        return None

    def _require_directory(self) -> None:
        """A file where the node's directory (or one of its parents) should be is the user's
        to move; said in one line rather than met as an OS error half-way through."""
        for path in (self.dir, *self.dir.parents):
            if path.exists():
                if not path.is_dir():
                    raise UsageError(
                        f"the anvil node's directory {self.dir} cannot be made: {path} is a "
                        "file; move it away"
                    )
                return

    def _running_pid(self) -> int | None:
        """The pid from the pid file if that process is this node."""
        pid = self._recorded_pid()
        return pid if pid is not None and self._is_this_node(pid) else None

    def _foreign_pid(self) -> int | None:
        """The pid from the pid file if that process lives and is not this node."""
        pid = self._recorded_pid()
        return pid if pid is not None and not self._is_this_node(pid) else None

    def _is_this_node(self, pid: int) -> bool:
        """Whether ``pid`` is anvil serving this node's port from this node's state file: the
        pid file's check against a pid recycled after a reboot or a crash, and against a
        pid file copied from another data directory."""
        command = _command_line(pid)
        return (
            bool(command)
            and Path(command[0]).name == "anvil"
            and _option(command, "--port") == str(self.port)
            and _option(command, "--state") == str(self.state_file)
        )

    def _wait_until_ready(self, pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _is_alive(pid):
                self.pid_file.unlink(missing_ok=True)
                raise ChainUnavailable(
                    f"anvil exited during start-up: {self._last_log_line()} (log: {self.log_file})"
                )
            try:
                _rpc(self.url, "eth_chainId")
                return
            except requests.RequestException:
                time.sleep(0.05)
        # A node that never answers is stopped rather than left holding the port.
        self.stop()
        raise ChainUnavailable(
            f"anvil did not answer on {self.url} within {timeout:g} s (log: {self.log_file})"
        )

    def _last_log_line(self) -> str:
        lines = [line for line in self.log_file.read_text(errors="replace").splitlines() if line]
        errors = [line for line in lines if "error" in line.lower()]
        return (errors or lines or ["no output"])[-1].strip()


def find_anvil() -> Path:
    """The anvil binary: ``$CONSORTIUM_ANVIL``, else the npm package in the nearest
    ``node_modules`` above this package or above the working directory."""
    configured = os.environ.get(ANVIL_ENV)
    if configured:
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise UsageError(f"{ANVIL_ENV}={configured} is not an executable file")
        return path
    for start in (Path(__file__).resolve().parent, Path.cwd().resolve()):
        for directory in (start, *start.parents):
            candidate = directory / NPM_BINARY
            if candidate.is_file():
                return candidate
    raise UsageError(
        "anvil not found: run `npm ci` in the project directory, "
        f"or set {ANVIL_ENV} to an anvil binary"
    )


def _spawn(command: list[str], log_fd: int) -> int:
    """Starts ``command`` in its own session (it survives the CLI process and its Ctrl-C),
    output to ``log_fd``. No Popen object: the node is not this process's to wait for, and
    :func:`_reap` collects it if this process happens to stop it."""
    return os.posix_spawn(
        command[0],
        command,
        os.environ,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, log_fd, 1),
            (os.POSIX_SPAWN_DUP2, log_fd, 2),
        ],
        setsid=True,
    )


def _rpc(url: str, method: str) -> str:
    response = requests.post(
        url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": []}, timeout=2.0
    )
    response.raise_for_status()
    return response.json()["result"]


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((host, port)) == 0


def _command_line(pid: int) -> list[str]:
    """The arguments of live process ``pid``; empty once it is gone or exiting. Uses /proc,
    which exists wherever the npm anvil package does (Linux)."""
    if not _is_alive(pid):
        return []
    try:
        raw = (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


def _option(command: list[str], name: str) -> str | None:
    """The value following ``name`` in ``command``, if any."""
    if name not in command[:-1]:
        return None
    return command[command.index(name) + 1]


def _is_alive(pid: int) -> bool:
    """True while any thread of ``pid`` runs.

    No name check: a process that is exiting has already released its command line, yet
    still holds its listening socket until it is gone. Nor is a zombie main thread the end:
    anvil's other threads go on writing the state file and serving the port after it.
    """
    _reap(pid)
    try:
        status = (Path("/proc") / str(pid) / "status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    zombie = fields.get("State", "").strip().startswith("Z")
    return not zombie or int(fields.get("Threads", "1")) > 1


def _reap(pid: int) -> None:
    """Collects the exit status if ``pid`` is our own exited child, so it is not a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _wait_for_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _is_alive(pid):
            return True
        time.sleep(0.05)
    return not _is_alive(pid)
