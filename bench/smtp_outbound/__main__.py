"""bench/smtp_outbound: end-to-end outbound throughput, mailhost vs a private Postfix.

    .venv/bin/python bench/smtp_outbound [--messages 5000] [--rounds 3] [--domains 50] [--clients 4]
        [--processes N] [--concurrency N] [--no-opendkim] [--timeline] [--threads]

mailhost: authenticated submission (runsmtp --submission, STARTTLS + AUTH PLAIN) -> queue rows
-> Celery worker with beat (DKIM-signed at enqueue, MX looked up in a loopback nsd serving 50
domains) -> an aiosmtpd sink on 127.0.0.2. Postfix: a private instance (own config and queue
under a temp dir) as a submission service the way Debian deploys one: STARTTLS with a self-signed
pair, SASL AUTH through a private Dovecot's auth service (a socket in Postfix's queue directory,
which Debian's chrooted smtpd reaches as private/auth), relaying only for authenticated clients to
the same sink. Both peers get the same client conversation: STARTTLS, AUTH PLAIN as bob, then mail.
msg/s counts from the first submission to the last message received by the sink.
The peers take turns: --rounds times (default 3) mailhost and Postfix, mailhost first in odd
rounds and Postfix first in even ones (then Postfix with OpenDKIM), each on fresh state, and the
figures printed are the medians, with the ratios' range: on a shared box one run's ratio swung
0.59-0.95 for the same code, and the box's speed drifts within minutes.

The Postfix above does not sign, while mailhost DKIM-signs every message. So a third run (unless
--no-opendkim, and skipped with a note when Debian's opendkim is not installed) puts the same load
through the same Postfix, Dovecot and sink once more, Postfix now restarted with smtpd_milters
pointing at a private OpenDKIM (how Mail-in-a-Box signs; on a unix socket in the queue directory as
Debian lays it out, since loopback TCP stalled each message ~90 ms) that signs with mailhost's own
RSA-2048 key for example.org, relaxed/relaxed, the headers mailhost signs, From oversigned. A milter
failure refuses mail (milter_default_action = tempfail) rather than passing it unsigned, and one
message the sink received in that run is verified with dkimpy against the key's public half: if it
does not verify, the bench exits non-zero without printing figures. Its msg/s and the ratio
mailhost/(postfix + opendkim) follow the headline ratio, which stays mailhost vs the plain Postfix.

Then the DKIM RSA signing cost: mailhost's (OpenSSL through `cryptography`) vs dkimpy's pure-Python
RSA. --threads adds, for every round, mailhost's CPU a message by thread as the kernel counts it
(the services name their threads for the OS: mailhost/threads.py).
Everything stays on loopback; every loop is bounded by count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import smtplib
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
TIME_LIMIT = 900
LOGIN = ("bob@example.org", "bench password 1")  # both peers' submission login
OPENDKIM = "/usr/sbin/opendkim"  # Debian's opendkim package


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc=None, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}) before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing on port {port}")


class CountingSink:
    """aiosmtpd on 127.0.0.2 that only counts messages (and keeps one to check its signature).

    It offers PIPELINING, as real MXes do, so that both peers' clients pipeline as they would
    on the internet (Postfix's smtp client and mailhost's both do, RFC 2920)."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.count = 0
        self.arrivals: list[float] = []  # time.monotonic() of each message received
        self.kept = b""  # the message after the last keep_next()
        self.keeping = False
        self.lock = threading.Lock()
        self.port = free_port()
        outer = self

        class Handler:
            async def handle_EHLO(self, server, session, envelope, hostname, responses):
                # As nearly every real MX does; both peers' clients then pipeline (RFC 2920).
                session.host_name = hostname
                return responses[:-1] + ["250-PIPELINING", responses[-1]]

            async def handle_DATA(self, server, session, envelope):
                with outer.lock:
                    outer.count += 1
                    outer.arrivals.append(time.monotonic())
                    if outer.keeping:
                        outer.kept, outer.keeping = envelope.original_content, False
                return "250 2.0.0 Ok"

        self.controller = Controller(Handler(), hostname="127.0.0.2", port=self.port, server_hostname="sink.bench",
                                     data_size_limit=0)

    def keep_next(self) -> None:
        """Keep the next message received in `kept` (`sample` only ever holds the first)."""
        with self.lock:
            self.kept, self.keeping = b"", True

    def wait(self, target: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while self.count < target and time.monotonic() < deadline:
            time.sleep(0.05)
        return time.monotonic()


def message(n: int, domain_count: int) -> tuple[str, bytes]:
    rcpt = f"user{n % 7}@d{n % domain_count}.bench"
    body = "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n" * 60
    data = (f"From: Bob <bob@example.org>\r\nTo: {rcpt}\r\nSubject: bench message {n}\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n{body}").encode()
    return rcpt, data


def submit(port: int, indices: list[int], domains: int, login: tuple[str, str] | None, errors: list) -> None:
    try:
        client = smtplib.SMTP("127.0.0.1", port, timeout=60)
        if login:
            client.starttls(context=ssl._create_unverified_context())
            client.login(*login)
        for n in indices:
            rcpt, data = message(n, domains)
            client.sendmail("bob@example.org", [rcpt], data)
        client.quit()
    except Exception as exc:  # noqa: BLE001 - reported, and the run fails
        errors.append(exc)


@dataclass
class Load:
    rate: float         # msg/s, first submission to last message at the sink
    box_cpu: float      # CPU ms per message of the whole box
    bench_cpu: float    # of which this process's (the submitting clients and the sink)


def run_load(port: int, total: int, domains: int, clients: int, login, sink: CountingSink,
             timeline: bool = False) -> Load:
    """One peer's figures; `timeline`: print the messages reaching the sink per half second."""
    start_count = sink.count
    errors: list = []
    chunks = [list(range(i, total, clients)) for i in range(clients)]
    started = time.monotonic()
    box = box_cpu_seconds()
    own = sum(os.times()[:2])
    threads = [threading.Thread(target=submit, args=(port, c, domains, login, errors)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIME_LIMIT)
    if errors:
        raise RuntimeError(f"submission failed: {errors[0]!r}")
    submitted = time.monotonic()
    print(f"  submitted {total} in {submitted - started:.1f} s; {sink.count - start_count} already delivered",
          flush=True)
    end = sink.wait(start_count + total, TIME_LIMIT)
    if sink.count - start_count < total:
        raise RuntimeError(f"only {sink.count - start_count} of {total} messages arrived in time")
    load = Load(total / (end - started), (box_cpu_seconds() - box) * 1000 / total,
                (sum(os.times()[:2]) - own) * 1000 / total)
    if timeline:
        halves = [0] * (int((end - started) * 2) + 1)
        for t in sink.arrivals[start_count:]:
            halves[min(len(halves) - 1, int((t - started) * 2))] += 1
        print(f"  at the sink per 0.5 s (submission ended at {submitted - started:.1f} s): {halves}", flush=True)
    return load


def box_cpu_seconds() -> float:
    """CPU time the whole machine spent busy (all processes, both peers' and the bench's own)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def _stat(path: str) -> tuple[str, list[str]] | None:
    """(name, fields after it) of a /proc stat file; None when the process or thread is gone."""
    try:
        stat = Path(path).read_text()
    except OSError:
        return None
    return stat[stat.find("(") + 1:stat.rfind(")")], stat[stat.rfind(")") + 2:].split()


def _group_members(pgid: int) -> list[str]:
    """The live processes of one process group (a service and the children it forked)."""
    return [entry for entry in os.listdir("/proc")
            if entry.isdigit() and (stat := _stat(f"/proc/{entry}/stat")) and int(stat[1][2]) == pgid]


def _cpu_ticks(fields: list[str]) -> int:
    return int(fields[11]) + int(fields[12])  # utime + stime


def group_cpu_seconds(pgid: int) -> float:
    """CPU time of the live processes of one process group."""
    total = sum(_cpu_ticks(stat[1]) for pid in _group_members(pgid) if (stat := _stat(f"/proc/{pid}/stat")))
    return total / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pgid: int) -> Counter:
    """CPU time of the threads of one process group, by the name the service gave each thread
    (mailhost/threads.py) without its number: `smtp-work_0` and `smtp-work_1` count together.
    Threads the services leave unnamed show as their process's name (`python`, `celery`)."""
    ticks: Counter = Counter()
    for pid in _group_members(pgid):
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            if stat := _stat(f"/proc/{pid}/task/{task}/stat"):
                ticks[re.sub(r"[-_]?\d+$", "", stat[0])] += _cpu_ticks(stat[1])
    return Counter({name: n / os.sysconf("SC_CLK_TCK") for name, n in ticks.items()})


def setup_mailhost(workdir: Path, dns, sink: CountingSink, domains: int, concurrency: int,
                    processes: int = 1, procs: list | None = None) -> tuple:
    """Start runsmtp and the worker; each goes into `procs` as it starts, so that the caller's
    `finally` stops it even when the other fails (a worker left behind would keep taking the
    next run's tasks from the shared filesystem broker folder)."""
    procs = [] if procs is None else procs
    env = dict(os.environ)
    # PostgreSQL when DATABASE_URL names it (the database is flushed first), else a fresh SQLite file.
    database = os.environ.get("DATABASE_URL", "")
    if not database.startswith("postgres"):
        database = f"sqlite:///{workdir}/bench.sqlite3"
    # Production's settings but for where things are: until the thirteenth session the beat
    # sweep ran every 0.5 s here instead of 5, a leftover from before submission kicked the
    # worker, and its sweeps and webhook runs cost the worker a sixth of its CPU a message.
    env.update({
        "DATABASE_URL": database, "DEBUG": "false", "MAIL_ROOT": str(workdir / "mail"),
        "MAIL_HOSTNAME": "mail.example.org", "MAIL_PUBLIC_IPS": "127.0.0.1", "DNS_RESOLVERS": dns.address,
        "SMTP_OUTBOUND_PORT": str(sink.port), "PYTHONPATH": str(ROOT),
        "CELERY_BROKER_URL": os.environ.get("CELERY_BROKER_URL", "filesystem://"), "LOG_LEVEL": "WARNING",
    })
    py = sys.executable
    subprocess.run([py, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    if database.startswith("postgres"):
        subprocess.run([py, "manage.py", "flush", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run([py, "manage.py", "createdomain", "example.org"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([py, "manage.py", "createmailbox", LOGIN[0], "--password", LOGIN[1]],
                   cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    smtp = subprocess.Popen([py, "manage.py", "runsmtp", "--inbound", "off", "--submission", f"127.0.0.1:{port}",
                             "--submissions", "off", "--processes", str(processes)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=(workdir / "runsmtp.log").open("wb"), start_new_session=True)
    procs.append(smtp)
    worker = subprocess.Popen([py, "-m", "celery", "-A", "mailhost", "worker", "-B", f"--concurrency={concurrency}",
                               "--without-gossip", "--without-mingle", "--loglevel=WARNING",
                               "-s", str(workdir / "beat")], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    procs.append(worker)
    try:
        wait_port(port, smtp)
    except RuntimeError:
        raise RuntimeError(f"runsmtp did not start: {(workdir / 'runsmtp.log').read_text()[-1500:]}") from None
    return env, smtp, worker, port


def start_dovecot_auth(workdir: Path, socket: Path) -> subprocess.Popen:
    """A private Dovecot running only its auth service, listening for Postfix on `socket`.

    Its own config, base_dir, state_dir and log under `workdir`; no mail protocols. The passdb is a
    passwd-file holding the bench's one login. The socket belongs to the postfix user (mode 0660),
    as in the Postfix example of Dovecot's 10-master.conf.
    """
    base = workdir / "dovecot"
    base.mkdir()
    users = base / "users"
    users.write_text(f"{LOGIN[0]}:{{PLAIN}}{LOGIN[1]}\n")
    users.chmod(0o640)
    shutil.chown(users, group="dovecot")  # read by the auth process, which runs as dovecot
    conf = base / "dovecot.conf"
    conf.write_text(f"""\
instance_name = bench-{base.parent.name}
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols =
# TLS is Postfix's (smtpd_tls_auth_only): this Dovecot only answers on the socket below.
ssl = no
auth_mechanisms = plain
passdb {{
  driver = passwd-file
  args = {users}
}}
userdb {{
  driver = static
  args = uid=postfix gid=postfix home=/nonexistent
}}
service auth {{
  unix_listener {socket} {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
""")
    with open(base / "stderr.log", "wb") as err:
        proc = subprocess.Popen([shutil.which("dovecot") or "/usr/sbin/dovecot", "-F", "-c", str(conf)],
                                stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not socket.is_socket():
        if proc.poll() is not None or time.monotonic() > deadline:
            logs = "".join(p.read_text(errors="replace") for p in (base / "stderr.log", base / "dovecot.log")
                           if p.exists())
            state = f"exited ({proc.returncode})" if proc.poll() is not None else f"made no {socket}"
            stop(proc)  # not yet in the caller's list
            raise RuntimeError(f"dovecot {state}: {logs[-1500:]}")
        time.sleep(0.05)
    return proc


def setup_postfix(workdir: Path, sink: CountingSink, procs: list) -> tuple[subprocess.Popen, subprocess.Popen, int]:
    """A private Postfix submission service (STARTTLS, Dovecot SASL) relaying everything to the sink.

    Returns (dovecot, master, port). Each process is appended to `procs` as soon as it runs, so the
    caller's cleanup stops it even when a later step fails.
    """
    conf = workdir / "postfix"
    conf.mkdir()
    queue = workdir / "postfix-queue"
    port = free_port()
    shutil.copy("/etc/postfix/master.cf", conf / "master.cf")
    # Debian's smtp line as is, chroot included: smtpd finds Dovecot at private/auth in the queue directory.
    master = (conf / "master.cf").read_text().replace("smtp      inet", f"127.0.0.1:{port}      inet", 1)
    (conf / "master.cf").write_text(master)
    tls = workdir / "postfix-tls"
    # The same kind of pair mailhost makes for itself (EC P-256, self-signed), read by smtpd before its chroot.
    from delivery.tls import make_self_signed

    make_self_signed("postfix.bench", tls / "cert.pem", tls / "key.pem")
    (conf / "main.cf").write_text(f"""
queue_directory = {queue}
data_directory = {workdir}/postfix-data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.bench
mydestination =
# Nobody relays by address: the bench's clients come from 127.0.0.1 and must authenticate.
mynetworks =
relayhost = [127.0.0.2]:{sink.port}
smtp_tls_security_level = none
smtpd_tls_security_level = may
smtpd_tls_cert_file = {tls}/cert.pem
smtpd_tls_key_file = {tls}/key.pem
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_relay_restrictions = permit_sasl_authenticated, reject
maillog_file_prefixes = {workdir}
maillog_file = {workdir}/postfix.log
compatibility_level = 3.6
default_destination_concurrency_limit = 20
""")
    for d in (queue, workdir / "postfix-data"):
        d.mkdir(exist_ok=True)
    shutil.chown(workdir / "postfix-data", "postfix")
    subprocess.run(["postfix", "-c", str(conf), "set-permissions"], capture_output=True)
    private = queue / "private"
    private.mkdir(mode=0o700, exist_ok=True)
    shutil.chown(private, "postfix")
    dovecot = start_dovecot_auth(workdir, private / "auth")
    procs.append(dovecot)
    return dovecot, start_postfix_master(workdir, port, procs), port


def start_postfix_master(workdir: Path, port: int, procs: list) -> subprocess.Popen:
    """Postfix's master on the config setup_postfix wrote, appended to `procs`, once smtpd answers on `port`."""
    # Not in a new session: master makes its own process group and refuses to be a leader already.
    proc = subprocess.Popen(["/usr/lib/postfix/sbin/master", "-d", "-c", str(workdir / "postfix")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    procs.append(proc)
    try:
        wait_port(port, proc)
    except (RuntimeError, TimeoutError):
        log = workdir / "postfix.log"
        detail = log.read_text()[-1500:] if log.exists() else ""
        if proc.poll() is not None:
            detail += proc.stderr.read().decode()[-1500:]
        raise RuntimeError(f"postfix master failed: {detail}") from None
    return proc


def dkim_key(env: dict) -> dict:
    """mailhost's active DKIM key for example.org: selector, private_key (PEM) and txt (its DNS TXT value)."""
    code = """
import json, django
django.setup()
from domains.models import Domain
key = Domain.objects.get(name="example.org").active_dkim_key()
print(json.dumps({"selector": key.selector, "private_key": key.private_key, "txt": key.txt_value}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**env, "DJANGO_SETTINGS_MODULE": "mailhost.settings"}, timeout=120)
    return json.loads(out.stdout)


def start_opendkim(workdir: Path, key: dict, procs: list) -> tuple[subprocess.Popen, str]:
    """A private OpenDKIM signing for example.org with mailhost's key; returns it and Postfix's smtpd_milters.

    Started as root in the foreground; it reads its config and key, then runs as the opendkim user
    (UserID), which alone can read the key file (0600). Mail-in-a-Box's settings where they matter:
    relaxed/relaxed, one key for the domain, mail from 127.0.0.1 signed (InternalHosts). The socket is
    Debian's choice, a unix socket in Postfix's queue directory (which the chrooted smtpd sees as
    opendkim/opendkim.sock), not Mail-in-a-Box's inet:8891@127.0.0.1: over loopback TCP each message
    waited about 90 ms on the milter conversation (40 msg/s instead of 200, CPU per message unchanged),
    a stall that is no signing work and would swamp the figure this run is for.
    """
    base = workdir / "opendkim"
    base.mkdir(mode=0o700)
    shutil.chown(base, "opendkim", "opendkim")
    keyfile = base / f"{key['selector']}.private"
    keyfile.touch(mode=0o600)
    shutil.chown(keyfile, "opendkim", "opendkim")
    keyfile.write_text(key["private_key"])
    # Only opendkim and the postfix group may enter; the socket itself is left open (UMask 000) to them.
    sockdir = workdir / "postfix-queue" / "opendkim"
    sockdir.mkdir(mode=0o750)
    shutil.chown(sockdir, "opendkim", "postfix")
    sock = sockdir / "opendkim.sock"
    # The headers mailhost's signer covers (delivery/signing.py SIGNED_HEADERS), From oversigned like there.
    signed = "From,To,Cc,Subject,Date,Message-ID,Reply-To,In-Reply-To,References,MIME-Version,Content-Type," \
             "Content-Transfer-Encoding"
    conf = workdir / "opendkim.conf"
    conf.write_text(f"""\
Mode s
Syslog no
UserID opendkim
Socket local:{sock}
UMask 000
PidFile {base}/opendkim.pid
Domain example.org
Selector {key['selector']}
KeyFile {keyfile}
# The key file is 0600 in a 0700 directory, both opendkim's; the check would refuse it only because /tmp
# above them is world-writable (sticky, so nobody else can swap them).
RequireSafeKeys no
Canonicalization relaxed/relaxed
SignatureAlgorithm rsa-sha256
SignHeaders {signed}
OversignHeaders From
InternalHosts 127.0.0.1
""")
    with open(workdir / "opendkim.log", "wb") as err:
        proc = subprocess.Popen([OPENDKIM, "-f", "-x", str(conf)], stdin=subprocess.DEVNULL, stdout=err,
                                stderr=subprocess.STDOUT, start_new_session=True)
    procs.append(proc)
    deadline = time.monotonic() + 30
    while not sock.is_socket():
        if proc.poll() is not None or time.monotonic() > deadline:
            state = f"exited ({proc.returncode})" if proc.poll() is not None else f"made no {sock} in 30 s"
            raise RuntimeError(f"opendkim {state}: {(workdir / 'opendkim.log').read_text()[-1500:]}")
        time.sleep(0.05)
    return proc, f"unix:{sock.relative_to(workdir / 'postfix-queue')}"


def add_milter(workdir: Path, milter: str) -> None:
    """Every message Postfix's smtpd takes goes through the OpenDKIM milter; a failing milter refuses mail."""
    with open(workdir / "postfix" / "main.cf", "a") as f:
        f.write(f"""
smtpd_milters = {milter}
non_smtpd_milters =
milter_protocol = 6
# Never let a broken or absent milter pass mail through unsigned: the client sees 4xx and the run fails.
milter_default_action = tempfail
""")


def signed_by(message: bytes, key: dict) -> bool:
    """Whether `message` carries a DKIM signature by example.org that verifies against `key` (dkimpy)."""
    import dkim

    name = f"{key['selector']}._domainkey.example.org."

    def dnsfunc(qname, timeout=5):
        qname = qname.decode() if isinstance(qname, bytes) else qname
        return key["txt"].encode() if qname.lower() == name else b""

    return bool(message) and dkim.verify(message, dnsfunc=dnsfunc)


def dkim_speed(env: dict) -> tuple[float, float]:
    """ms per RSA-2048 signature: mailhost's signer vs dkimpy's own, on the same message."""
    code = """
import os, time, django
django.setup()
import dkim
from domains.models import Domain
from delivery import signing
key = Domain.objects.get(name="example.org").active_dkim_key()
data = signing.prepare(open(os.environ["BENCH_MSG"], "rb").read())
t = time.perf_counter()
for _ in range(300): signing.signature_header(data, key)
ours = (time.perf_counter() - t) / 300 * 1000
t = time.perf_counter()
for _ in range(30): dkim.sign(data, key.selector.encode(), b"example.org", key.private_key.encode(),
                              canonicalize=(b"relaxed", b"relaxed"))
print(ours, (time.perf_counter() - t) / 30 * 1000)
"""
    msg = Path(env["MAIL_ROOT"]).parent / "sample.eml"
    msg.write_bytes(message(0, 1)[1])
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**env, "DJANGO_SETTINGS_MODULE": "mailhost.settings", "BENCH_MSG": str(msg)})
    ours, pure = map(float, out.stdout.split())
    return ours, pure


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None and proc.args[0].endswith(("/master", "/dovecot")):
        proc.terminate()  # Postfix's and Dovecot's masters stop their own children
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()  # their children exit when the master's pipes close
            proc.wait(timeout=10)
        return
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass


@dataclass
class Round:
    """One round's figures: mailhost's load, then the plain Postfix's (then with OpenDKIM)."""

    env: dict
    ours: float
    our_cpu: float
    service_cpu: list[float]
    sample: bytes
    theirs: float
    their_cpu: float
    bench_cpu: float    # mean of the two runs: the same clients and sink for either peer
    bench_cpus: tuple[float, float] = (0.0, 0.0)   # the clients' and sink's share in each run
    signing: float = 0.0
    signing_cpu: float = 0.0
    opendkim_cpu: float = 0.0
    kept: bytes = b""
    key: dict | None = None

    def summary(self) -> str:
        line = (f"mailhost {self.ours:.1f} msg/s ({self.our_cpu:.2f} ms CPU/message: runsmtp "
                f"{self.service_cpu[0]:.2f}, worker {self.service_cpu[1]:.2f}), "
                f"postfix {self.theirs:.1f} ({self.their_cpu:.2f}), ratio {self.ours / self.theirs:.2f}; "
                f"clients and sink {self.bench_cpus[0]:.2f} / {self.bench_cpus[1]:.2f}")
        if self.signing:
            line += f"; postfix + opendkim {self.signing:.1f}, ratio {self.ours / self.signing:.2f}"
        return line


def spread(values: list[float]) -> str:
    """' (median of N rounds: lo-hi)' when there was more than one round."""
    if len(values) < 2:
        return ""
    return f" (median of {len(values)} rounds: {min(values):.2f}-{max(values):.2f})"


def run_round(args, workdir: Path, dns, sink: CountingSink, procs: list, mailhost_first: bool = True) -> Round:
    """mailhost and the plain Postfix, then (with --opendkim) Postfix signing, each loaded in turn
    on its own fresh state in `workdir`. Odd rounds load mailhost first, even rounds Postfix:
    this box's speed drifts within minutes (mailhost's CPU a message went 4.9 -> 6.3 -> 7.4 ms
    over one run's three rounds), and a fixed order handed that drift to one peer."""
    mailhost: dict = {}

    def load_mailhost() -> None:
        env, smtp, worker, port = setup_mailhost(workdir, dns, sink, args.domains, args.concurrency,
                                                   args.processes, procs)
        time.sleep(3)  # let the worker connect to the broker
        before = group_cpu_seconds(smtp.pid), group_cpu_seconds(worker.pid)
        threads_before = [thread_cpu_seconds(p.pid) for p in (smtp, worker)] if args.threads else []
        sink.keep_next()
        load = run_load(port, args.messages, args.domains, args.clients, LOGIN, sink, args.timeline)
        if args.threads:
            for service, p, earlier in zip(("runsmtp", "worker"), (smtp, worker), threads_before, strict=True):
                spent = thread_cpu_seconds(p.pid)
                spent.subtract(earlier)
                print(f"  {service} threads, CPU ms/message: " + ", ".join(
                    f"{name} {value * 1000 / args.messages:.2f}" for name, value in spent.most_common() if value > 0),
                    flush=True)
        mailhost.update(env=env, load=load, sample=sink.kept, service_cpu=[
            (group_cpu_seconds(p.pid) - b) * 1000 / args.messages for p, b in zip((smtp, worker), before, strict=True)])
        for p in (smtp, worker):
            stop(p)

    def load_postfix() -> tuple[subprocess.Popen, int, Load]:
        dovecot, postfix, pport = setup_postfix(workdir, sink, procs)
        load = run_load(pport, args.messages, args.domains, args.clients, LOGIN, sink, args.timeline)
        stop(postfix)
        return dovecot, pport, load

    if mailhost_first:
        load_mailhost()
        dovecot, pport, theirs = load_postfix()
    else:
        dovecot, pport, theirs = load_postfix()
        load_mailhost()
    env, ours, service_cpu, sample = mailhost["env"], mailhost["load"], mailhost["service_cpu"], mailhost["sample"]
    key = dkim_key(env) if args.opendkim else None
    result = Round(env, ours.rate, ours.box_cpu, service_cpu, sample, theirs.rate, theirs.box_cpu,
                   (ours.bench_cpu + theirs.bench_cpu) / 2, (ours.bench_cpu, theirs.bench_cpu), key=key)
    if args.opendkim:
        # The same Postfix, Dovecot and sink, restarted with the milter: only the signing is new.
        opendkim, milter = start_opendkim(workdir, key, procs)
        add_milter(workdir, milter)
        postfix = start_postfix_master(workdir, pport, procs)
        sink.keep_next()
        before_odk = group_cpu_seconds(opendkim.pid)
        signing = run_load(pport, args.messages, args.domains, args.clients, LOGIN, sink, args.timeline)
        result.signing, result.signing_cpu = signing.rate, signing.box_cpu
        result.opendkim_cpu = (group_cpu_seconds(opendkim.pid) - before_odk) * 1000 / args.messages
        result.kept = sink.kept
        for p in (postfix, opendkim):
            stop(p)
    stop(dovecot)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternate the peers this many times and print medians (a shared box's msg/s "
                             "swings more between runs than most changes move it)")
    parser.add_argument("--domains", type=int, default=50)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                        help="runsmtp --processes: submission service copies sharing the port (default: cores)")
    parser.add_argument("--timeline", action="store_true",
                        help="print how many messages reached the sink in each half second of every run")
    parser.add_argument("--threads", action="store_true",
                        help="print the CPU of mailhost's services a message by thread (event loop, sessions, "
                             "group commit, sync, delivery lanes) for every round")
    parser.add_argument("--opendkim", action=argparse.BooleanOptionalAction, default=None,
                        help=f"a third run: Postfix signing via an OpenDKIM milter (default: when {OPENDKIM} exists)")
    args = parser.parse_args()
    skip_opendkim = ""
    if args.opendkim is None:
        args.opendkim = Path(OPENDKIM).exists()
        if not args.opendkim:
            skip_opendkim = f"{OPENDKIM} is missing (apt-get install opendkim)"
    elif not args.opendkim:
        skip_opendkim = "--no-opendkim"
    elif not Path(OPENDKIM).exists():
        parser.error(f"--opendkim: {OPENDKIM} is missing (apt-get install opendkim)")
    from tests.dns_server import LoopbackDns

    nsd = shutil.which("nsd") or "/usr/sbin/nsd"
    procs: list[subprocess.Popen] = []
    rounds: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="bench-outbound-") as tmp:
        top = Path(tmp)
        top.chmod(0o755)  # postfix daemons run as the postfix user and must reach their queue
        (top / "nsd").mkdir()
        dns = LoopbackDns(top / "nsd", nsd)
        dns.zones["sink.bench"] = ["mx IN A 127.0.0.2"]
        for i in range(args.domains):
            dns.zones[f"d{i}.bench"] = ["@ IN MX 10 mx.sink.bench."]
        sink = CountingSink()
        sink.controller.start()
        try:
            dns.restart()
            for n in range(1, args.rounds + 1):
                workdir = top / f"round{n}"  # a fresh database, queue and Postfix for every round
                workdir.mkdir(mode=0o755)
                rounds.append(run_round(args, workdir, dns, sink, procs, mailhost_first=n % 2 == 1))
                if args.rounds > 1:
                    first = "mailhost" if n % 2 == 1 else "postfix"
                    print(f"  round {n} ({first} first): {rounds[-1].summary()}", flush=True)
            sign_ours, sign_pure = dkim_speed(rounds[-1].env)
        finally:
            for p in procs:
                stop(p)
            sink.controller.stop()
            dns.stop()
    bad = next((r for r in rounds if args.opendkim and not signed_by(r.kept, r.key)), None)
    if bad is not None:
        print("sample signed by opendkim: False", flush=True)
        head = bad.kept.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
        print(f"a message Postfix relayed through OpenDKIM does not verify; its header:\n{head}", file=sys.stderr)
        return 1
    env = rounds[-1].env

    def of(figure) -> float:
        return median(figure(r) for r in rounds)

    ours, theirs = of(lambda r: r.ours), of(lambda r: r.theirs)
    ratios = [r.ours / r.theirs for r in rounds]
    print(f"messages: {args.messages} to {args.domains} domains, {args.clients} submitting clients, "
          f"{args.rounds} round{'s' if args.rounds > 1 else ''}; "
          f"database {env['DATABASE_URL'].split(':')[0]}, broker {env['CELERY_BROKER_URL'].split(':')[0]}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"mailhost (submission+AUTH, DKIM, Celery, MX via DNS):                  {ours:8.1f} msg/s")
    print(f"postfix  (submission+AUTH via Dovecot SASL, relaying to the same sink): {theirs:8.1f} msg/s")
    print(f"ratio mailhost/postfix: {median(ratios):.2f}" + spread(ratios))
    if args.opendkim:
        signing = of(lambda r: r.signing)
        signing_ratios = [r.ours / r.signing for r in rounds]
        print(f"postfix + opendkim (same, signing each message with DKIM through the OpenDKIM milter): "
              f"{signing:8.1f} msg/s")
        print(f"ratio mailhost/(postfix + opendkim): {median(signing_ratios):.2f}" + spread(signing_ratios))
        signing_line = (f", postfix + opendkim {of(lambda r: r.signing_cpu):.2f} "
                        f"(opendkim {of(lambda r: r.opendkim_cpu):.2f})")
    else:
        print(f"postfix + opendkim: skipped, {skip_opendkim}")
        signing_line = ""
    print(f"CPU ms/message, whole box: mailhost {of(lambda r: r.our_cpu):.2f} "
          f"(runsmtp {of(lambda r: r.service_cpu[0]):.2f}, worker {of(lambda r: r.service_cpu[1]):.2f}, "
          f"this bench's clients and sink {of(lambda r: r.bench_cpu):.2f}), "
          f"postfix {of(lambda r: r.their_cpu):.2f}{signing_line}")
    print(f"DKIM RSA-2048 signature: {sign_ours:.2f} ms (OpenSSL) vs {sign_pure:.2f} ms (dkimpy pure Python), "
          f"{sign_pure / sign_ours:.1f}x faster")
    print("sample signed:", all(r.sample.startswith(b"DKIM-Signature:") for r in rounds))
    if args.opendkim:
        print("sample signed by opendkim: True")
    return 0


if __name__ == "__main__":
    sys.exit(main())
