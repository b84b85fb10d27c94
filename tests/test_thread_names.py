"""The services' threads carry their names down to the operating system.

An operator looking at a busy SMTP service or worker with `top -H`, `ps -L` or `perf` sees
which thread is busy (the group commit, its disk sync, a session, a delivery lane) instead
of a column of `python`.
"""

from __future__ import annotations

import smtplib
import threading
from pathlib import Path

from delivery import outbound
from mailhost.threads import name_native_thread


def os_thread_names(pid: int) -> set[str]:
    """What the kernel calls each thread of `pid` and of the processes it forked."""
    pids = {pid} | {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == pid}
    names = set()
    for each in pids:
        for task in Path(f"/proc/{each}/task").glob("*"):
            try:
                names.add((task / "comm").read_text().strip())
            except OSError:
                pass
    return names


def _parent(proc: Path) -> int | None:
    try:
        stat = (proc / "stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2:].split()[1])


def own_os_name() -> str:
    return Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()


def test_the_smtp_service_names_its_commit_sync_and_session_threads(smtp_service):
    with smtplib.SMTP("127.0.0.1", smtp_service.inbound, timeout=10) as client:
        client.ehlo("client.example")
        client.mail("someone@elsewhere.example")
        code, _ = client.rcpt("nobody@not-hosted.example")  # looked up in a session thread
        assert code == 550
    names = os_thread_names(smtp_service.proc.pid)
    assert {"smtp-db-writer", "smtp-db-syncer"} <= names
    assert any(name.startswith("smtp-work") for name in names), names


def test_a_workers_delivery_lanes_are_named_for_the_os(settings):
    settings.QUEUE_PARALLEL_DESTINATIONS = 2
    lanes = outbound._lane_pool(2)
    seen = {lanes.submit(own_os_name).result(timeout=10) for _ in range(20)}
    assert seen and seen <= {"delivery-lane-0", "delivery-lane-1"}


def test_a_name_longer_than_the_kernel_keeps_is_cut_to_its_first_15_bytes():
    seen = []

    def run():
        name_native_thread()
        seen.append(own_os_name())

    thread = threading.Thread(target=run, name="a-rather-long-thread-name")
    thread.start()
    thread.join()
    assert seen == ["a-rather-long-t"]
