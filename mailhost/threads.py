"""The service threads' names, given to the operating system as well as to Python.

Python names a thread for itself only: `top -H`, `ps -L`, `perf` and /proc all show every
thread of the SMTP service or a worker as `python`, so which one is busy (the event loop, the
group commit, a delivery lane) could only be told with a debugger attached. Linux keeps up to
15 bytes of a name per thread; elsewhere, or where /proc is not mounted, nothing happens.
"""

from __future__ import annotations

import threading


def name_native_thread() -> None:
    """Give the calling thread's OS task its Python name (its first 15 bytes)."""
    name = threading.current_thread().name.encode("ascii", "replace")[:15]
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "wb") as comm:
            comm.write(name)
    except OSError:
        pass
