"""What `up` prints of a child that died during start-up, and the logs' size cap."""

from __future__ import annotations

from pathlib import Path

from bookcluster.local import logs

PYTHON_DEATH = """\
2026-12-07 10:00:00 INFO bookcluster.node: starting north.node.1
Traceback (most recent call last):
  File "/usr/lib/python3.11/asyncio/base_events.py", line 1536, in create_server
    sock.bind(sa)
OSError: [Errno 98] Address already in use

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File "/work/bookcluster/node/server.py", line 140, in serve
    await site.start()
OSError: [Errno 98] error while attempting to bind on address ('127.0.0.1', 8101): address \
already in use
"""

REDIS_DEATH = """\
123:M 07 Dec 2026 10:00:00.000 * Running mode=standalone, port=6401.
123:M 07 Dec 2026 10:00:00.000 # Warning: Could not create server TCP listening socket \
127.0.0.1:6401: bind: Address already in use
123:M 07 Dec 2026 10:00:00.000 # Failed listening on port 6401 (tcp), aborting.
"""


def test_python_traceback_gives_its_exception_line() -> None:
    assert logs.last_error_line(PYTHON_DEATH) == (
        "OSError: [Errno 98] error while attempting to bind on address ('127.0.0.1', 8101): "
        "address already in use")


def test_redis_gives_its_last_complaint_and_plain_logs_their_last_line() -> None:
    assert logs.last_error_line(REDIS_DEATH).endswith(  # type: ignore[union-attr]
        "Failed listening on port 6401 (tcp), aborting.")
    assert logs.last_error_line("starting\nlistening on 8101\n\n") == "listening on 8101"
    assert logs.last_error_line("\n \n") is None
    assert len(logs.last_error_line("fatal: " + "x" * 1000) or "") == logs.MAX_LINE


def test_why_it_died_names_the_line_and_the_log(tmp_path: Path) -> None:
    log = tmp_path / "north.node.1.log"
    log.write_text(PYTHON_DEATH)
    assert logs.why_it_died(log).startswith("OSError: [Errno 98] error while attempting")
    assert str(log) in logs.why_it_died(log)
    assert "nothing in its log" in logs.why_it_died(tmp_path / "missing.log")


def test_rotation_at_start_and_cap_in_place(tmp_path: Path) -> None:
    old = tmp_path / "a.log"
    old.write_text("previous run\n")
    (tmp_path / "a.log.1").write_text("the run before\n")
    logs.rotate_at_start(tmp_path)
    assert not old.exists() and (tmp_path / "a.log.1").read_text() == "previous run\n"

    big, small = tmp_path / "big.log", tmp_path / "small.log"
    with open(big, "ab") as writer:  # the child's side: O_APPEND, open across the rotation
        writer.write(b"0123456789" * 10)
        writer.flush()
        small.write_bytes(b"short")
        assert logs.cap(tmp_path, limit=30) == [big]
        assert (tmp_path / "big.log.1").read_bytes() == b"0123456789" * 3
        writer.write(b"after")
        writer.flush()
    assert big.read_bytes() == b"after" and small.read_bytes() == b"short"
