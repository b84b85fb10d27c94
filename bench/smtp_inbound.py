"""Inbound SMTP benchmark: mailhost's runsmtp vs a private Postfix, same load, same run.

Load: N messages of 4 KiB over C concurrent connections to M mailboxes (defaults 5,000 / 50 /
100). Each server must make every message durable in a Maildir: mailhost before its 250,
Postfix in its queue before the 250 and then in the Maildir via the `virtual` agent. Printed
per server: accepted msg/s, time until every message is in a Maildir, peak RSS (sum over the
server's process tree, sampled every 100 ms; PSS too, which does not count shared pages once per
process), the CPU time the tree spent per message (steadier than msg/s on a shared machine), and
the ratios mailhost/Postfix.

Everything runs on loopback high ports in a temporary directory, with a loopback nsd answering
mailhost's SPF/DMARC lookups for the sender domain (Postfix does no such checks here).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DOMAIN = "bench.test"
SENDER = "load@sender.test"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def message(n: int, rcpt: str) -> bytes:
    head = (f"From: Load <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: bench {n}\r\n"
            f"Message-ID: <{n}.{time.time_ns()}@sender.test>\r\n\r\n").encode()
    line = b"x" * 76 + b"\r\n"
    return head + line * ((4096 - len(head)) // len(line))


# -- load generator ------------------------------------------------------------------------------

async def _reply(reader) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        if line[3:4] != b"-":
            return line


async def _connection(port: int, jobs: list[tuple[int, str]], counter: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await _reply(reader)
    writer.write(b"EHLO load.sender.test\r\n")
    await _reply(reader)
    for n, rcpt in jobs:
        writer.write(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
        for _ in range(3):
            answer = await _reply(reader)
        if not answer.startswith(b"354"):
            raise RuntimeError(f"DATA refused: {answer!r}")
        writer.write(message(n, rcpt) + b".\r\n")
        answer = await _reply(reader)
        if not answer.startswith(b"250"):
            raise RuntimeError(f"message refused: {answer!r}")
        counter[0] += 1
    writer.write(b"QUIT\r\n")
    await _reply(reader)
    writer.close()


def run_load(port: int, messages: int, connections: int, mailboxes: int) -> float:
    jobs = [(n, f"user{n % mailboxes}@{DOMAIN}") for n in range(messages)]
    shares = [jobs[i::connections] for i in range(connections)]
    counter = [0]

    async def main():
        await asyncio.gather(*(_connection(port, share, counter) for share in shares))

    start = time.monotonic()
    asyncio.run(main())
    return time.monotonic() - start


# -- measuring -----------------------------------------------------------------------------------

def _tree(root_pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process; PSS splits shared pages, so sums over a tree are fair."""
    rss = pss = 0
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def _cpu_ticks(pid: int) -> int:
    """utime + stime of a process (a process that exits mid-run counts as last sampled)."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return int(fields[11]) + int(fields[12])


class RssSampler(threading.Thread):
    """Peak memory of the server's process tree, and the CPU time it spends during the run."""

    def __init__(self, root_pid_fn):
        super().__init__(daemon=True)
        self.root_pid_fn, self.peak, self.peak_pss, self.running = root_pid_fn, 0, 0, True
        self.cpu_start = self._cpu_now()
        self.cpu_seen: dict[int, int] = {}

    def _pids(self) -> list[int]:
        roots = self.root_pid_fn()
        roots = roots if isinstance(roots, list) else [roots] if roots else []
        return [p for root in roots for p in _tree(root)]

    def _cpu_now(self) -> dict[int, int]:
        return {pid: _cpu_ticks(pid) for pid in self._pids()}

    def run(self):
        while self.running:
            pids = self._pids()
            if pids:
                sizes = [_memory_kib(p) for p in pids]
                self.peak = max(self.peak, sum(rss for rss, _ in sizes))
                self.peak_pss = max(self.peak_pss, sum(pss for _, pss in sizes))
                self.cpu_seen.update(self._cpu_now())
            time.sleep(0.1)

    def cpu_seconds(self) -> float:
        seen = {**self.cpu_seen, **self._cpu_now()}
        ticks = sum(seen.values()) - sum(self.cpu_start.get(pid, 0) for pid in seen)
        return ticks / os.sysconf("SC_CLK_TCK")


def count_maildir(base: Path) -> int:
    return sum(len(os.listdir(d)) for d in base.glob("*/*/new"))


def measure(name: str, port: int, root_pid_fn, maildir_base: Path, args) -> dict:
    sampler = RssSampler(root_pid_fn)
    sampler.start()
    start = time.monotonic()
    accept_time = run_load(port, args.messages, args.connections, args.mailboxes)
    while count_maildir(maildir_base) < args.messages:
        if time.monotonic() - start > 600:
            raise RuntimeError(f"{name}: only {count_maildir(maildir_base)} messages in Maildir after 600 s")
        time.sleep(0.05)
    maildir_time = time.monotonic() - start
    time.sleep(0.3)
    sampler.running = False
    sampler.join()
    return {"name": name, "msg_s": args.messages / accept_time, "maildir_s": maildir_time,
            "rss_mib": sampler.peak / 1024, "pss_mib": sampler.peak_pss / 1024,
            "cpu_ms": 1000 * sampler.cpu_seconds() / args.messages}


# -- mailhost ------------------------------------------------------------------------------------

def run_mailhost(work: Path, args) -> dict:
    from tests.dns_server import LoopbackDns

    nsd = shutil.which("nsd") or "/usr/sbin/nsd"
    (work / "nsd").mkdir()
    dns = LoopbackDns(work / "nsd", nsd)
    dns.zones["sender.test"] = ['@ IN TXT "v=spf1 ip4:127.0.0.0/8 -all"', '_dmarc IN TXT "v=DMARC1; p=none"']
    dns.restart()
    try:
        return _run_mailhost(work, args, dns)
    finally:
        dns.stop()


def _run_mailhost(work: Path, args, dns) -> dict:
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{work}/mailhost.sqlite3", MAIL_ROOT=str(work / "mhmail"),
               MAIL_HOSTNAME="mail.bench.test", MAIL_PUBLIC_IPS="127.0.0.1", DNS_RESOLVERS=dns.address,
               SMTP_MAX_CONNECTIONS_PER_IP="1000", LOG_LEVEL="WARNING",
               # production settings: DEBUG would record every SQL statement in memory
               DEBUG="false")
    env.pop("CELERY_BROKER_URL", None)
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    py = str(ROOT / ".venv" / "bin" / "python")
    subprocess.run([py, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    setup = (
        "from domains.provisioning import create_domain\n"
        "from domains.models import Domain\n"
        "from mailboxes.provisioning import create_mailbox\n"
        "from mailboxes.models import Mailbox\n"
        f"d = Domain.objects.filter(name='{DOMAIN}').first() or create_domain('{DOMAIN}')\n"
        f"for i in range({args.mailboxes}):\n"
        f"    Mailbox.objects.filter(domain=d, local_part=f'user{{i}}').exists() or "
        f"create_mailbox(f'user{{i}}@{DOMAIN}', 'bench-password-1')\n"
    )
    subprocess.run([py, "manage.py", "shell", "-c", setup], cwd=ROOT, env=env, check=True)
    port = free_port()
    # `--processes N` forks N copies sharing the port's socket (each new connection to the copy
    # with the fewest): how the stateless service uses every core; `--copies K` starts K such
    # commands on one port (SO_REUSEPORT, the kernel spreading connections over the commands).
    procs = [subprocess.Popen([py, "manage.py", "runsmtp", "--inbound", f"127.0.0.1:{port}", "--submission", "off",
                               "--submissions", "off", "--processes", str(args.processes)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE) for _ in range(args.copies)]
    pids = [p.pid for p in procs]
    try:
        for proc in procs:
            proc.stdout.readline()      # "runsmtp: inbound on ..." once every process listens
        time.sleep(0.5)
        copies = args.processes * args.copies
        return measure(f"mailhost x{copies}" if copies > 1 else "mailhost", port, lambda: pids, work / "mhmail", args)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)


# -- Postfix -------------------------------------------------------------------------------------

MASTER_CF = """\
{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def run_postfix(work: Path, args) -> dict:
    postfix = shutil.which("postfix") or "/usr/sbin/postfix"
    conf, queue, data, mail = work / "pf-conf", work / "pf-queue", work / "pf-data", work / "pf-mail"
    for d in (conf, queue, data, mail):
        d.mkdir()
    owner = pwd.getpwnam("postfix")
    os.chown(data, owner.pw_uid, owner.pw_gid)
    os.chown(mail, owner.pw_uid, owner.pw_gid)
    port = free_port()
    (conf / "vmailbox").write_text("".join(f"user{i}@{DOMAIN} {DOMAIN}/user{i}/\n" for i in range(args.mailboxes)))
    (conf / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.bench.test
mydestination =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = reject_unauth_destination
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_base = {mail}
virtual_mailbox_maps = texthash:{conf}/vmailbox
virtual_uid_maps = static:{owner.pw_uid}
virtual_gid_maps = static:{owner.pw_gid}
virtual_minimum_uid = 100
virtual_destination_concurrency_limit = 20
message_size_limit = 26214400
smtpd_client_connection_count_limit = 1000
default_process_limit = 200
maillog_file = {work}/postfix.log
maillog_file_prefixes = {work}
biff = no
smtputf8_enable = yes
""")
    (conf / "master.cf").write_text(MASTER_CF.format(port=f"127.0.0.1:{port}"))
    env = dict(os.environ, MAIL_CONFIG=str(conf))
    subprocess.run([postfix, "-c", str(conf), "set-permissions"], env=env, capture_output=True)
    started = subprocess.run([postfix, "-c", str(conf), "start"], env=env, capture_output=True, text=True)
    if started.returncode != 0:
        raise RuntimeError(f"postfix did not start: {started.stderr}")
    pid_file = queue / "pid" / "master.pid"

    def master_pid() -> int:
        try:
            return int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    try:
        _wait_port(port)
        return measure("postfix", port, master_pid, mail, args)
    finally:
        subprocess.run([postfix, "-c", str(conf), "stop"], env=env, capture_output=True)
        for _ in range(100):
            if not master_pid() or not os.path.exists(f"/proc/{master_pid()}"):
                break
            time.sleep(0.1)


def _wait_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--mailboxes", type=int, default=100)
    parser.add_argument("--database-url", default="", help="default: a fresh SQLite file")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                        help="runsmtp --processes (default: the number of cores)")
    parser.add_argument("--copies", type=int, default=1, help="separate runsmtp commands sharing the port")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-smtp-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        results = [run_mailhost(work, args), run_postfix(work, args)]
    print(f"\n{args.messages} messages x 4 KiB, {args.connections} connections, {args.mailboxes} mailboxes, "
          f"database {'PostgreSQL' if args.database_url.startswith('postgres') else 'SQLite'}, "
          f"runsmtp --processes {args.processes}" + (f" x {args.copies} commands" if args.copies > 1 else ""))
    print(f"{'server':10} {'accepted msg/s':>15} {'all in Maildir (s)':>19} {'peak RSS (MiB)':>15}"
          f" {'peak PSS (MiB)':>15} {'CPU ms/msg':>11}")
    for r in results:
        print(f"{r['name']:10} {r['msg_s']:15.1f} {r['maildir_s']:19.2f} {r['rss_mib']:15.1f} {r['pss_mib']:15.1f}"
              f" {r['cpu_ms']:11.2f}")
    mh, pf = results
    print(f"ratio mailhost/Postfix: throughput {mh['msg_s'] / pf['msg_s']:.2f}, "
          f"time to Maildir {pf['maildir_s'] / mh['maildir_s']:.2f} (>1 = mailhost faster), "
          f"peak RSS {mh['rss_mib'] / pf['rss_mib']:.2f}, peak PSS {mh['pss_mib'] / pf['pss_mib']:.2f}, "
          f"CPU per message {mh['cpu_ms'] / pf['cpu_ms']:.2f} (<1 = mailhost cheaper)")


if __name__ == "__main__":
    main()
