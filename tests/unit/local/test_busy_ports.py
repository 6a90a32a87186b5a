"""Finding who holds a port from /proc, as `bookcluster up` does before it starts anything
(a fake /proc here: tables and fd links written by the test)."""

from __future__ import annotations

import os
from pathlib import Path

from bookcluster.local import busy_ports
from bookcluster.topology.load import load_topology

HEADER = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
          "timeout inode\n")


def row(n: int, port: int, state: str, inode: int) -> str:
    return (f"   {n}: 0100007F:{port:04X} 00000000:0000 {state} 00000000:00000000 "
            f"00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n")


def fake_proc(root: Path, tcp: str, tcp6: str, fds: dict[int, list[str]],
              cmdlines: dict[int, bytes]) -> Path:
    (root / "net").mkdir(parents=True)
    (root / "net" / "tcp").write_text(tcp)
    (root / "net" / "tcp6").write_text(tcp6)
    (root / "self").mkdir()  # not a pid: skipped
    for pid, targets in fds.items():
        (root / str(pid) / "fd").mkdir(parents=True)
        for n, target in enumerate(targets):
            os.symlink(target, root / str(pid) / "fd" / str(n))
        (root / str(pid) / "cmdline").write_bytes(cmdlines.get(pid, b""))
    return root


def test_listener_found_before_other_states_and_time_wait_ignored() -> None:
    table = HEADER + row(0, 8101, "06", 0) + row(1, 8101, "01", 222) + row(2, 8101, "0A", 111) \
        + row(3, 8102, "0A", 333)
    assert busy_ports.socket_inodes(table, 8101) == [111, 222]
    assert busy_ports.socket_inodes(table, 9999) == []


def test_holder_named_by_pid_and_command(tmp_path: Path) -> None:
    proc = fake_proc(
        tmp_path / "proc", HEADER + row(0, 8101, "0A", 4242), HEADER,
        {10: ["/dev/null", "socket:[1]"], 20: ["pipe:[7]", "socket:[4242]"]},
        {20: b"/usr/bin/python3\0-m\0http.server\08101\0"})
    assert busy_ports.holder_of(8101, proc) == "pid 20 python3 -m http.server 8101"
    assert busy_ports.holder_of(8102, proc) is None  # nobody in the tables


def test_holder_unnamed_when_no_visible_process_has_the_socket(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path / "proc", HEADER, HEADER + row(0, 6401, "0A", 99),
                     {10: ["socket:[1]"]}, {})
    assert busy_ports.holder_of(6401, proc) is None
    line = busy_ports.BusyPort("north.redis.master", busy_ports.Endpoint("127.0.0.1", 6401),
                               "Address already in use", None).line()
    assert line == "127.0.0.1:6401 (north.redis.master): Address already in use"


def test_planned_ports_cover_every_store_and_process_of_the_regions() -> None:
    repo = Path(__file__).resolve().parents[3]
    topology = load_topology(repo / "topology.yaml")
    labels = [label for label, _ in busy_ports.planned(topology, ["north"])]
    assert "north.nodes[0]" in labels and "payments.gateway" in labels
    assert {"north.redis.master", "north.redis.sentinel", "north.postgres.primary",
            "north.postgres.etcd[0]", "north.postgres.etcd[1]", "north.postgres.patroni[0]",
            "north.worker"} <= set(labels)
    assert not any(label.startswith("south.") for label in labels)
    south = busy_ports.planned(topology, ["south"])
    assert "payments.gateway" not in [label for label, _ in south]
    everything = busy_ports.planned(topology, None)
    assert len(everything) == len(set(ep for _, ep in everything))  # one row per port
    assert {label.split(".")[0] for label, _ in everything} == {"north", "south", "west",
                                                                "payments"}
