"""A private, real Postfix for relay tests: started by the test, on loopback, with its own
configuration directory, queue and log under a temp dir, relaying everything to one port.

Why each setting is there is said next to it. The shape of the instance:

    smtplib / generator ──> 127.0.0.1:listen_port (smtpd) ──> queue ──> smtp ──> [127.0.0.1]:relay_port

The system-wide Postfix (if any) is never touched: every command gets ``-c DIR``, the queue,
pid file and master lock live under the temp dir, and the listener is on a fresh port. Postfix
must run as root to start (it drops to the ``postfix`` user itself); tests that use this call
``require_root_postfix()`` first.

Pitfalls this avoids (see issue 7):
- ``maillog_file`` without a ``postlog`` service in master.cf: Postfix logs nothing, and start fails.
- After a failed start the master can hold its port for ~60 s: never reload or reuse a port;
  stop, and start again on a fresh port.
- Debian's master.cf runs most daemons chrooted into the queue directory, which would need copies
  of /etc files inside it: this instance writes its own master.cf with chroot off.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from conftest import REQUIRE_PEERS, require_command

# The queue subdirectories Postfix expects (postfix-files), created here so a fresh temp dir works
# without post-install. public/ and maildrop/ are shared with the setgid postdrop group.
_PRIVATE_QUEUE_DIRS = ("active", "bounce", "corrupt", "defer", "deferred", "flush", "hold",
                       "incoming", "private", "saved", "trace")
_QUEUE_FILE_DIRS = ("incoming", "active", "deferred", "hold", "maildrop")

# Services this instance needs; unprivileged "-" (runs as the postfix user), chroot "n" always.
_MASTER_SERVICES = """\
# service   type  private unpriv chroot wakeup maxproc command
pickup      unix  n       -      n      60     1       pickup
cleanup     unix  n       -      n      -      0       cleanup
qmgr        unix  n       -      n      300    1       qmgr
rewrite     unix  -       -      n      -      -       trivial-rewrite
bounce      unix  -       -      n      -      0       bounce
defer       unix  -       -      n      -      0       bounce
trace       unix  -       -      n      -      0       bounce
verify      unix  -       -      n      -      1       verify
flush       unix  n       -      n      1000?  0       flush
proxymap    unix  -       -      n      -      -       proxymap
proxywrite  unix  -       -      n      -      1       proxymap
smtp        unix  -       -      n      -      -       smtp
relay       unix  -       -      n      -      -       smtp
showq       unix  n       -      n      -      -       showq
error       unix  -       -      n      -      -       error
retry       unix  -       -      n      -      -       error
discard     unix  -       -      n      -      -       discard
anvil       unix  -       -      n      -      1       anvil
scache      unix  -       -      n      -      1       scache
# maillog_file is written by postlogd; without this line Postfix cannot log (or start cleanly).
postlog     unix-dgram n  -      n      -      1       postlogd
"""


def require_root_postfix() -> str:
    """Path of ``postfix``; skip (or fail in CI) when missing or when not running as root."""
    path = require_command("postfix")
    if os.geteuid() != 0:
        msg = "a private Postfix needs root to start (it drops privileges itself)"
        if REQUIRE_PEERS:
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def _sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is as good as gone (its parent, the postfix command, has already exited).
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class PostfixError(RuntimeError):
    pass


class PrivatePostfix:
    """A real Postfix, its own config dir, queue and log: smtpd on ``127.0.0.1:listen_port``, every message
    relayed to ``[127.0.0.1]:relay_port``. Use as a context manager, or call start()/stop().

    ``settings`` override or add main.cf parameters (e.g. ``maximal_queue_lifetime="1h"``);
    ``tables`` are files written into the config directory, for settings that name them, e.g.
    ``tables={"header_checks": "/^X-Smtpbench-Seq:/ INFO\\n"}`` with
    ``header_checks="regexp:$config_directory/header_checks"``.
    """

    host = "127.0.0.1"

    def __init__(self, tmp_dir, listen_port: int, relay_port: int, *, tables: dict[str, str] | None = None,
                 **settings: str):
        self.tmp_dir = Path(tmp_dir)
        self.tables = dict(tables or {})
        self.listen_port = listen_port
        self.relay_port = relay_port
        self.settings = dict(settings)
        # Put in the banner, so a test can tell this instance from any other Postfix.
        self.tag = f"smtpbench-{uuid.uuid4().hex[:12]}"
        self.master_pid: int | None = None
        self.root: Path | None = None
        self.saved_log = self.tmp_dir / "postfix-maillog"

    def _make_root(self) -> None:
        # Postfix opens some files as its own user by absolute path (the master's lock in
        # data_directory, for one), so every directory above them must be searchable by that user,
        # and a pytest tmp dir sits under a root-only (700) directory. The instance therefore lives
        # in a directory of its own under the system temp dir, removed by stop(), which first copies
        # the log to tmp_dir/postfix-maillog for a look after the test.
        self.root = Path(tempfile.mkdtemp(prefix="smtpbench-postfix-"))
        os.chmod(self.root, 0o755)

    @property
    def config_dir(self) -> Path:
        return self._under("etc")

    @property
    def queue_dir(self) -> Path:
        return self._under("spool")

    @property
    def data_dir(self) -> Path:
        return self._under("data")

    @property
    def log_file(self) -> Path:
        return self._under("maillog")

    def _under(self, name: str) -> Path:
        if self.root is None:
            raise PostfixError("this Postfix is not started")
        return self.root / name

    # -- configuration ----------------------------------------------------------------------

    def main_cf(self) -> dict[str, str]:
        conf = {
            # 3.6 is the newest level Debian bookworm's 3.7 knows; it silences the
            # backwards-compatibility warnings without changing anything this test relies on.
            "compatibility_level": "3.6",
            "config_directory": str(self.config_dir),
            # Lets -c DIR work for commands that check it (setgid postqueue/postdrop).
            "alternate_config_directories": str(self.config_dir),
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            # Log to a file of our own through postlogd (needs the postlog service in master.cf).
            "maillog_file": str(self.log_file),
            "maillog_file_prefixes": str(self.root),  # else: fatal, "does not match any prefix"
            "syslog_name": f"postfix-{self.tag}",
            "myhostname": "relay.smtpbench.test",
            "mydomain": "smtpbench.test",
            "myorigin": "$myhostname",
            "smtpd_banner": f"$myhostname ESMTP {self.tag}",
            # Short queue ids are unique only while the message is queued (they reuse the inode):
            # a test joining log lines by queue id needs the long, never-reused form.
            "enable_long_queue_ids": "yes",
            # Loopback only, IPv4 only: no surprise listeners, no ::1 address choice.
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "smtp_address_preference": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "mynetworks_style": "host",
            # Nothing is local: every recipient, whatever its domain, goes to the relayhost.
            "mydestination": "",
            "local_recipient_maps": "",
            "relay_domains": "",
            "relayhost": f"[{self.host}]:{self.relay_port}",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            # No DNS anywhere: the relayhost is an address literal in brackets.
            "smtp_dns_support_level": "disabled",
            "disable_dns_lookups": "yes",  # the pre-2.11 spelling of the same, for older Postfixes
            "smtp_host_lookup": "native",
            "lmtp_host_lookup": "native",
            "smtpd_peername_lookup": "no",
            # No TLS: the sink may offer STARTTLS with a self-signed certificate; we measure relaying.
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "smtputf8_enable": "yes",
            # Short retry timings, so deferred mail is retried within a test's time box.
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "4s",
            "smtp_connect_timeout": "2s",
            # A deferred message must stay queued for the whole test, never bounce or warn.
            "maximal_queue_lifetime": "1h",
            "bounce_queue_lifetime": "1h",
            "delay_warning_time": "0h",
            # Deliver now: no in-flow throttling of the generator, no waiting for more mail.
            "in_flow_delay": "0s",
            "default_process_limit": "50",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "smtpd_client_message_rate_limit": "0",
            "message_size_limit": "52428800",
            "biff": "no",
            "append_dot_mydomain": "no",
            "readme_directory": "no",
            "notify_classes": "",
        }
        conf.update(self.settings)
        return conf

    def master_cf(self) -> str:
        # Only our listener: no port 25, no submission; -o makes a failed bind obvious in the log.
        listener = f"{self.host}:{self.listen_port} inet n - n - - smtpd\n"
        return "# written by tests/postfix_helpers.py\n" + listener + _MASTER_SERVICES

    def write_config(self) -> None:
        """Config dir (root, 755), queue dir (root, 755) and its subdirs (postfix, 700), data dir."""
        for d in (self.root, self.config_dir, self.queue_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o755)
        for sub in _PRIVATE_QUEUE_DIRS:
            p = self.queue_dir / sub
            p.mkdir(exist_ok=True)
            os.chmod(p, 0o700)
            shutil.chown(p, "postfix")
        for sub, mode in (("maildrop", 0o730), ("public", 0o710)):
            p = self.queue_dir / sub
            p.mkdir(exist_ok=True)
            shutil.chown(p, "postfix", "postdrop")
            os.chmod(p, mode)
        (self.queue_dir / "pid").mkdir(exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        shutil.chown(self.data_dir, "postfix")
        os.chmod(self.data_dir, 0o700)
        lines = [f"{k} = {v}" for k, v in self.main_cf().items()]
        (self.config_dir / "main.cf").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (self.config_dir / "master.cf").write_text(self.master_cf(), encoding="utf-8")
        for name, text in self.tables.items():
            (self.config_dir / name).write_text(text, encoding="utf-8")

    # -- commands ---------------------------------------------------------------------------

    def _run(self, *args: str, timeout: float = 20.0, check: bool = True) -> subprocess.CompletedProcess:
        """Run a Postfix command with a terminal on stderr: Postfix commands print their warnings
        and fatal errors there only when it is a tty (else only to the log, which may not exist yet)."""
        master_fd, slave_fd = pty.openpty()
        try:
            proc = subprocess.Popen(list(args), stdout=subprocess.PIPE, stderr=slave_fd, stdin=subprocess.DEVNULL,
                                    env={**os.environ, "MAIL_CONFIG": str(self.config_dir)})
            os.close(slave_fd)
            slave_fd = -1
            err = bytearray()
            deadline = time.monotonic() + timeout
            while True:
                ready, _, _ = select.select([master_fd], [], [], 0.05)
                if ready:
                    try:
                        chunk = os.read(master_fd, 65536)
                    except OSError:  # EIO: every writer has closed the terminal
                        chunk = b""
                    err += chunk
                    if not chunk and proc.poll() is not None:
                        break
                elif proc.poll() is not None:
                    break
                if time.monotonic() > deadline:
                    proc.kill()
                    proc.communicate()
                    raise subprocess.TimeoutExpired(list(args), timeout, output=bytes(err))
            out = proc.stdout.read().decode("utf-8", "replace")
            proc.stdout.close()
            proc.wait()
        finally:
            os.close(master_fd)
            if slave_fd >= 0:
                os.close(slave_fd)
        result = subprocess.CompletedProcess(list(args), proc.returncode, out,
                                             err.decode("utf-8", "replace").replace("\r\n", "\n"))
        if check and proc.returncode != 0:
            raise PostfixError(f"{' '.join(args)} -> {proc.returncode}\n{out}{result.stderr}"
                               f"\n--- maillog ---\n{self.log()[-4000:]}")
        return result

    def postfix(self, command: str, **kw) -> subprocess.CompletedProcess:
        return self._run(_sbin("postfix"), "-c", str(self.config_dir), command, **kw)

    def postconf(self, *args: str) -> str:
        return self._run(_sbin("postconf"), "-c", str(self.config_dir), *args).stdout

    def running(self) -> bool:
        """``postfix -c DIR status``: is the master of *this* configuration running?"""
        return self.postfix("status", check=False).returncode == 0

    def _read_master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> "PrivatePostfix":
        require_root_postfix()
        if not _port_free(self.host, self.listen_port):
            raise PostfixError(f"port {self.listen_port} is taken: pick a fresh one")
        if self.root is not None:
            raise PostfixError("already started; stop() first (and use a fresh port to start again)")
        self._make_root()
        try:
            self.write_config()
            self.postfix("check")
            self.postfix("start", timeout=timeout)
            deadline = time.monotonic() + timeout
            while True:
                self.master_pid = self._read_master_pid()
                if self.master_pid and self.running() and self._banner_is_ours():
                    return self
                if time.monotonic() > deadline:
                    raise PostfixError(f"Postfix did not come up on {self.host}:{self.listen_port}"
                                       f"\n--- maillog ---\n{self.log()[-4000:]}")
                time.sleep(0.1)
        except BaseException:
            self.stop()  # a half-started master too; and the temp dir goes (the log is kept)
            raise

    def _banner_is_ours(self) -> bool:
        try:
            with socket.create_connection((self.host, self.listen_port), timeout=2) as s:
                s.settimeout(2)
                banner = s.recv(512)
                s.sendall(b"QUIT\r\n")
        except OSError:
            return False
        return self.tag.encode() in banner

    def stop(self, timeout: float = 20.0) -> None:
        """``postfix stop``, then ``abort``, then SIGKILL to the master's process group: whatever
        it takes, bounded, until the master is gone and the listen port is free. Then the log is
        saved to tmp_dir/postfix-maillog and the instance's directory (queue included) removed."""
        if self.root is None:
            return
        pid = self.master_pid or self._read_master_pid()
        try:
            for command in ("stop", "abort"):
                try:
                    self.postfix(command, check=False, timeout=timeout)
                except subprocess.TimeoutExpired:
                    pass
                if pid is None or self._wait_gone(pid, timeout / 2):
                    break
            if pid is not None and _alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)  # the master calls setsid(): the group is its own
                except ProcessLookupError:
                    pass
                self._wait_gone(pid, 5)
            deadline = time.monotonic() + timeout
            while not _port_free(self.host, self.listen_port) and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            self.master_pid = None
            try:
                self.tmp_dir.mkdir(parents=True, exist_ok=True)
                if self.log_file.exists():
                    shutil.copyfile(self.log_file, self.saved_log)
            finally:
                shutil.rmtree(self.root, ignore_errors=True)
                self.root = None

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def __enter__(self) -> "PrivatePostfix":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the queue and the log --------------------------------------------------------------

    def queue(self) -> list[dict]:
        """``postqueue -j``: one dict per queued message (queue_name, queue_id, recipients...).

        By queue id: the listing walks the queue directories one after the other, so a message the
        queue manager moves between them (incoming -> active) while it runs can be listed twice
        (seen in CI: 11 of 10); its queue id stays the same.
        """
        out = self._run(_sbin("postqueue"), "-c", str(self.config_dir), "-j").stdout
        entries = (json.loads(line) for line in out.splitlines() if line.strip())
        return list({entry["queue_id"]: entry for entry in entries}.values())

    def queue_size(self) -> int:
        """Messages anywhere in the queue (incoming, active, deferred, hold, maildrop). A snapshot:
        while Postfix retries, one message moving between queues can be missed (see wait_empty)."""
        return len(self.queue())

    def queue_files(self) -> int:
        """The same count from the queue directories themselves (no Postfix process involved)."""
        n = 0
        for sub in _QUEUE_FILE_DIRS:
            for _dirpath, _dirs, files in os.walk(self.queue_dir / sub):
                n += len(files)
        return n

    def flush(self) -> None:
        """``postqueue -f``: retry every deferred message now (and forget dead-site status)."""
        self._run(_sbin("postqueue"), "-c", str(self.config_dir), "-f")

    def log(self) -> str:
        """The maillog so far (after stop(): the saved copy)."""
        try:
            path = self.log_file if self.root is not None else self.saved_log
            return path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def wait_empty(self, timeout: float = 20.0, interval: float = 0.2) -> None:
        """Until the queue is empty; PostfixError (with the queue and log tail) on timeout.

        Empty twice in a row: a queue listing walks the queue directories one after the other, so
        a message the queue manager moves between them (deferred -> active) can be missed once.
        """
        deadline = time.monotonic() + timeout
        empty = 0
        while True:
            empty = empty + 1 if self.queue_files() == 0 and self.queue_size() == 0 else 0
            if empty >= 2:
                return
            if time.monotonic() > deadline:
                raise PostfixError(f"queue not empty after {timeout}s: {self.queue()}"
                                   f"\n--- maillog ---\n{self.log()[-4000:]}")
            time.sleep(interval)

    def wait_queued(self, count: int, timeout: float = 20.0) -> int:
        """Until at least ``count`` messages are queued (re-reading past a listing that missed one
        on the move, see wait_empty); the count seen last."""
        deadline = time.monotonic() + timeout
        while True:
            n = self.queue_size()
            if n >= count or time.monotonic() > deadline:
                return n
            time.sleep(0.2)

@pytest.fixture
def start_postfix(tmp_path):
    """Factory: ``start_postfix(relay_port, **main_cf)`` starts a PrivatePostfix on a fresh port,
    relaying to ``relay_port``; every instance is stopped at teardown, failed test or not."""
    from conftest import free_port

    started: list[PrivatePostfix] = []

    def start(relay_port: int, *, tables: dict[str, str] | None = None, **settings: str) -> PrivatePostfix:
        pf = PrivatePostfix(tmp_path / f"postfix-{len(started)}", free_port(), relay_port, tables=tables, **settings)
        started.append(pf)
        return pf.start()

    yield start
    for pf in started:
        pf.stop()
