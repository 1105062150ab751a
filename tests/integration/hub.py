"""Harness for integration tests: starts the real mcphub daemons on ephemeral loopback
ports, waits until they are ready, stops them TERM then KILL, and checks that nothing they
started is left behind. Standard library only (plus grpc in the tests that use it)."""

import atexit
import contextlib
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time

BIN_DIR = os.environ.get("MCPHUB_BIN_DIR", "")
_started = []  # every Daemon of this test process, so a failed test still cleans up


def binary(name):
    path = os.path.join(BIN_DIR, name)
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{path} is not built (set MCPHUB_BIN_DIR)")
    return path


class Daemon:
    """One daemon process whose stderr is collected line by line."""

    def __init__(self, name, args, env=None):
        self.name = name
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [binary(name)] + args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=full_env,
            text=True,
        )
        _started.append(self)
        self.lines = []
        self._cv = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stderr:
            with self._cv:
                self.lines.append(line.rstrip("\n"))
                self._cv.notify_all()
        with self._cv:
            self._cv.notify_all()

    def wait_line(self, pattern, timeout=10.0):
        """Returns the match of the first stderr line matching pattern, waiting for it."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cv:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"{self.name}: no line matching {pattern!r}; stderr:\n" + self.log())
                self._cv.wait(min(left, 0.1))

    def log(self):
        with self._cv:
            return "\n".join(self.lines)

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Sends sig, waits; KILLs after timeout. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        if not self._reader.is_alive():
            self.proc.stderr.close()
        return self.proc.returncode

    def kill(self):
        return self.stop(signal.SIGKILL)


def start_control(args=None, env=None, listen="127.0.0.1:0", admin_listen="127.0.0.1:0"):
    d = Daemon("mcphub-control",
               ["--listen", listen, "--admin-listen", admin_listen] + (args or []), env)
    d.gateway_port = int(d.wait_line(r"service=gateway addr=127\.0\.0\.1:(\d+)").group(1))
    d.admin_port = int(d.wait_line(r"service=admin addr=127\.0\.0\.1:(\d+)").group(1))
    d.wait_line(r'msg="control ready"')
    return d


def start_edge(control_port, edge_id="edge-test", listen="127.0.0.1:0", env=None):
    d = Daemon("mcphub-edge", ["--listen", listen, "--control", f"127.0.0.1:{control_port}",
                               "--edge-id", edge_id], env)
    d.port = int(d.wait_line(r'msg="edge listening" addr=127\.0\.0\.1:(\d+)').group(1))
    return d


def http_get(port, path, timeout=2.0):
    """Returns (status, headers dict, body text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
    finally:
        conn.close()


def wait_status(port, path, want, timeout):
    """Polls path until it answers want; returns the seconds it took or raises."""
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < timeout:
        try:
            last = http_get(port, path)[0]
            if last == want:
                return time.monotonic() - t0
        except OSError as e:
            last = repr(e)
        time.sleep(0.05)
    raise AssertionError(f"GET {path}: wanted {want} within {timeout}s, last {last}")


# ---- MCP over the edge's HTTP ----

ACCEPT = "application/json, text/event-stream"
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "hub-test", "version": "1"}}}


def request(port, method, path, body=None, headers=None, raw=None, timeout=10):
    """Sends one request; returns (status, headers, parsed JSON body or None, raw body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn.request(method, path, body=data, headers=headers or {})
        r = conn.getresponse()
        text = r.read()
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        return r.status, {k.lower(): v for k, v in r.getheaders()}, parsed, text
    finally:
        conn.close()


def open_stream(port, path, headers, until=b"\r\n\r\n"):
    """GETs an event stream on a raw socket; returns (socket, what was read) once `until`
    arrived (the head, by default) with a 200."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                  + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode())
    data = read_until(sock, until)
    if not data.startswith(b"HTTP/1.1 200"):
        raise AssertionError(f"GET {path}: {data[:300]!r}")
    return sock, data


def read_until(sock, marker, timeout=10):
    """Reads from sock until marker arrived; returns what was read."""
    sock.settimeout(timeout)
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before {marker!r}: {data[-300:]!r}")
        data += chunk
    return data


def sse_messages(raw):
    """The JSON messages of an event-stream body (bytes), in order: each event's data lines
    joined; events without data (comments, priming events) left out."""
    out = []
    for event in raw.decode().replace("\r\n", "\n").split("\n\n"):
        data = "\n".join(l[5:].lstrip() for l in event.split("\n") if l.startswith("data:"))
        if data:
            out.append(json.loads(data))
    return out


def post_headers(session=None, version="2025-11-25", **extra):
    h = {"Content-Type": "application/json", "Accept": ACCEPT}
    if session:
        h["Mcp-Session-Id"] = session
    if version:
        h["MCP-Protocol-Version"] = version
    h.update(extra)
    return h


def start_hub(settings, edge_id="edge-test"):
    """Writes settings to a temporary file and starts control on it plus one ready edge;
    returns (the TemporaryDirectory, control, edge)."""
    d = tempfile.TemporaryDirectory()
    path = os.path.join(d.name, "mcp_settings.json")
    with open(path, "w") as f:
        json.dump(settings, f)
    ctl = start_control(["--config", path])
    edge = start_edge(ctl.gateway_port, edge_id=edge_id)
    wait_status(edge.port, "/readyz", 200, timeout=10)
    return d, ctl, edge


def wait_for(pred, timeout=5.0, what="condition"):
    """Polls pred until it returns something true, and returns that; raises after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def refused_port():
    """A port where connections are refused while the block runs: bound, never listening,
    so no other test's listener can take it meanwhile."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def restartable_port():
    """A free port below the kernel's ephemeral range, for a daemon that a test stops and
    starts again on the same address. A port 0 listener or an outgoing connection of any
    other test can take a port of the ephemeral range while its daemon is down; nothing takes
    one below it except a caller of this function, which picks at random."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    floor = max(1024, low - 10000)
    rng = random.SystemRandom()
    for _ in range(100):
        port = rng.randrange(floor, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {floor}..{low - 1}")


def children_of(pid):
    """PIDs whose parent is pid (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(entry))
        except (OSError, IndexError, ValueError):
            pass
    return out


def stop_all():
    """Stops (TERM, then KILL) every daemon this process started that still runs."""
    while _started:
        _started.pop().stop(timeout=5)


# A test that fails between starting daemons and stopping them (a tearDown whose first
# assertion fails, an error in setUpClass) must not leave them running after the run.
atexit.register(stop_all)


def assert_no_children():
    """Stops what a failed test left, then checks this test process has no child left."""
    stop_all()
    left = children_of(os.getpid())
    if left:
        raise AssertionError(f"child processes left behind: {left}")


def proc_state(pid):
    """The process's state letter (R, S, Z, ...), or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def vm_rss(pid):
    """Resident set size of pid in bytes, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def cpu_seconds(pid):
    """utime + stime of pid so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_argv(pid):
    """{child pid: its argv as a list of bytes} for pid's children (zombies have none)."""
    out = {}
    for child in children_of(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                out[child] = f.read().split(b"\0")
        except OSError:
            continue
    return out
