"""Network namespaces as hosts: one per region, joined by a bridge inside its own
namespace.

Each host namespace has loopback and one veth whose peer is a port of the bridge
`br0` in the bridge namespace; no interface or address is ever in the root
namespace. The hosts' addresses (10.250.0.x) are therefore reachable only from
inside the namespaces: every command that talks to them runs there
(`Hosts.run`/`popen`, i.e. `ip netns exec`); from the root namespace the same
addresses would be routed off the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

SUBNET = "10.250.0"


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (ip netns add)"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    probe = f"bcprobe{os.getpid() % 100000}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True,
                          check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=False)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Hosts:
    """Namespaces named `<prefix>-<host>` plus `<prefix>-br`; host i has 10.250.0.(i+1)."""

    def __init__(self, prefix: str, names: Sequence[str]) -> None:
        self.prefix = prefix
        self.names = list(names)
        self.address = {n: f"{SUBNET}.{i + 1}" for i, n in enumerate(self.names)}
        self._started: list[subprocess.Popen[bytes]] = []

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def create(self) -> Hosts:
        bridge = self.ns("br")
        _ip("netns", "add", bridge)
        _ip("-n", bridge, "link", "set", "lo", "up")
        _ip("-n", bridge, "link", "add", "br0", "type", "bridge")
        _ip("-n", bridge, "link", "set", "br0", "up")
        for i, name in enumerate(self.names):
            ns = self.ns(name)
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            # Both ends are created inside their namespaces: nothing in the root one.
            _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name",
                f"port{i}", "netns", bridge)
            _ip("-n", bridge, "link", "set", f"port{i}", "master", "br0")
            _ip("-n", bridge, "link", "set", f"port{i}", "up")
            _ip("-n", ns, "addr", "add", f"{self.address[name]}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
        return self

    def argv(self, name: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns(name), *argv]

    def run(self, name: str, argv: Sequence[str], timeout: float = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(name, argv), capture_output=True, text=True,
                              timeout=timeout, check=False, env=env)

    def popen(self, name: str, argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "w") as out:
            # `ip netns exec` execs the command in place: this pid is the command's.
            proc = subprocess.Popen(self.argv(name, argv), stdout=out,
                                    stderr=subprocess.STDOUT)
        self._started.append(proc)
        return proc

    def destroy(self) -> None:
        """Stop what we started, then whatever is left in our namespaces, then them."""
        for proc in self._started:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._started:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for name in [*self.names, "br"]:
            ns = self.ns(name)
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                  text=True, check=False).stdout.split()
            for pid in pids:  # only processes inside our own namespace
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if pids:
                time.sleep(0.5)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
