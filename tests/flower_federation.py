"""A Flower federation on loopback, every process started (and stopped) here: a SuperLink and
its SuperExec (which runs the ServerApp), and per member a SuperNode and its SuperExec (which
runs a ClientApp per message), as ``--isolation process`` has it. Every wait is bounded.

Flower's telemetry, update check and run-time dependency installation are switched off, so
nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
ENVIRONMENT = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}
CONNECTION = "local"


def node_config(values: Mapping[str, str]) -> str:
    """``--node-config`` text: TOML values, strings quoted."""
    return " ".join(f"{key}={json.dumps(value)}" for key, value in values.items())


@dataclass
class Federation:
    directory: Path
    port: int
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        home = self.directory / "flwr-home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n'
        )
        self.environment = {
            **os.environ, **ENVIRONMENT, "FLWR_HOME": str(home),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }  # fmt: skip

    def start_link(self) -> None:
        self._start(
            "superlink", "flower-superlink", "--insecure", "--isolation", "process",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--disable-runtime-dependency-installation",
        )  # fmt: skip
        self._start(
            "superexec-link", "flower-superexec", "--insecure",
            "--runtime-api-address", f"127.0.0.1:{self.port}",
        )  # fmt: skip

    def start_node(self, name: str, port: int, config: Mapping[str, str]) -> None:
        self._start(
            f"supernode-{name}", "flower-supernode", "--insecure", "--isolation", "process",
            "--superlink", f"127.0.0.1:{self.port}", "--port", str(port),
            "--node-config", node_config(config),
        )  # fmt: skip
        self._start(
            f"superexec-{name}", "flower-superexec", "--insecure",
            "--runtime-api-address", f"127.0.0.1:{port}",
        )  # fmt: skip

    def stop_node(self, name: str) -> None:
        """Kills the member's SuperNode and SuperExec outright, as a crash would."""
        for kind in ("supernode", "superexec"):
            process = self.processes.pop(f"{kind}-{name}")
            _signal_group(process, signal.SIGKILL)
            process.wait(timeout=10)

    def kill_server_app(self) -> None:
        """Kills the running ServerApp outright (the process the SuperLink's SuperExec started
        for the run), as a crash of the coordinator's machine would."""
        parent = self.processes["superexec-link"].pid
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat[1]) == parent and b"flwr-serverapp" in command:
                os.kill(int(entry.name), signal.SIGKILL)
                return
        raise AssertionError("no ServerApp is running")

    def wait_for_nodes(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listed = self.flwr("supernode", "list", "--format", "json", check=False)
            if listed.count('"online"') >= count:
                return
            time.sleep(0.5)
        raise AssertionError(f"fewer than {count} SuperNodes came online within {timeout} s")

    def run(self, app: Path, run_config: Mapping[str, Any]) -> int:
        """Starts the app's run; returns its id."""
        config = " ".join(f"{k}={json.dumps(v)}" for k, v in run_config.items())
        reply = self.flwr("run", str(app), CONNECTION, "--run-config", config, "--format", "json")
        return int(json.loads(reply)["run-id"])

    def wait_for_run(self, run_id: int, timeout: float) -> str:
        """The run's final status (``finished:completed``, ``finished:failed``, …)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listed = json.loads(self.flwr("ls", "--run-id", str(run_id), "--format", "json"))
            status = str(listed["runs"][0]["status"])
            if status.startswith("finished"):
                return status
            time.sleep(1)
        raise AssertionError(f"run {run_id} did not finish within {timeout} s")

    def log(self, run_id: int) -> str:
        return self.flwr("log", str(run_id), CONNECTION, "--show", check=False)

    def flwr(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            [str(BIN / "flwr"), *args], env=self.environment, cwd=self.directory,
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"flwr {' '.join(args)}: {done.stderr.decode()[-2000:]}")
        return done.stdout.decode()

    def close(self) -> None:
        """Stops every process started here, and what each started (its process group)."""
        for process in self.processes.values():
            _signal_group(process, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait(timeout=10)
        self.processes.clear()

    def _start(self, name: str, *command: str) -> None:
        log = (self.directory / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            [str(BIN / command[0]), *command[1:]], env=self.environment, cwd=self.directory,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # gone already
        os.killpg(process.pid, sig)
