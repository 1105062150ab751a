"""Upstream servers that misbehave, seen by a client of the real hub (control + edge, MCP
over HTTP) in front of the C fixture's fault modes: one that never answers initialize, one
that floods its stdout with junk and over-long lines, one that exits after every handshake.
Each test checks what a user sees (answers, errors, how long they take), that control
replaces the broken process without spinning or growing, and that nothing is left behind.
(A SIGKILLed upstream during a call is test_control_mcp's test_crash_is_an_error_then_a_restart.)"""

import datetime
import itertools
import os
import re
import statistics
import threading
import time
import unittest

import hub
from hub import cpu_seconds, proc_state, vm_rss, wait_for

MIB = 1024 * 1024


def fixture(name, *fault):
    """A settings entry running the fixture as server `name`, with fault flags."""
    return {"command": hub.binary("mcphub-fixture"), "args": ["--name", name, *fault]}


def fixture_children(ctl_pid):
    """{pid: server name} of control's children that run the fixture, zombies included."""
    out = {}
    for pid, argv in hub.children_argv(ctl_pid).items():
        if argv[0].endswith(b"/mcphub-fixture") and b"--name" in argv[:-1]:
            out[pid] = argv[argv.index(b"--name") + 1].decode()
    return out


def server_pids(ctl_pid, name):
    """Live (not zombie) fixture processes of server `name` under control."""
    return [pid for pid, n in fixture_children(ctl_pid).items()
            if n == name and proc_state(pid) not in (None, "Z")]


def log_times(ctl, pattern):
    """(seconds since the epoch, line) of every control log line matching pattern, from ts=."""
    out = []
    for line in ctl.log().splitlines():
        if re.search(pattern, line):
            ts = re.match(r"ts=(\S+)", line).group(1)
            t = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ")
            out.append((t.replace(tzinfo=datetime.timezone.utc).timestamp(), line))
    return out


def text_of(answer):
    return answer.get("result", {}).get("content", [{}])[0].get("text")


def summary(latencies):
    ms = sorted(s * 1000 for s in latencies)
    return (f"{len(ms)} calls, min {ms[0]:.1f} ms, median {statistics.median(ms):.1f} ms, "
            f"max {ms[-1]:.1f} ms")


class Client:
    """One MCP session through the edge's Streamable HTTP endpoint. call() may run from
    several threads at once (one connection per call)."""

    def __init__(self, port, path="/mcp"):
        self.port, self.path = port, path
        status, headers, body, _ = hub.request(port, "POST", path, hub.INIT,
                                               hub.post_headers(version=None))
        assert status == 200, (status, body)
        self.session = headers["mcp-session-id"]
        status = hub.request(port, "POST", path, {"jsonrpc": "2.0", "method": "notifications/initialized"},
                             hub.post_headers(self.session))[0]
        assert status == 202, status
        self.ids = itertools.count(2)

    def call(self, tool, arguments, timeout=10):
        """Runs tools/call; returns (its JSON-RPC answer, seconds it took). The answer comes
        as JSON or as the last message of an event stream, whichever the edge chose."""
        rid = next(self.ids)
        msg = {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
               "params": {"name": tool, "arguments": arguments}}
        t0 = time.monotonic()
        status, headers, body, raw = hub.request(self.port, "POST", self.path, msg,
                                                 hub.post_headers(self.session), timeout=timeout)
        elapsed = time.monotonic() - t0
        if status == 200 and headers.get("content-type", "").startswith("text/event-stream"):
            body = None
            for m in hub.sse_messages(raw):
                if m.get("id") == rid and ("result" in m or "error" in m):
                    body = m
        if status != 200 or not isinstance(body, dict):
            raise AssertionError(f"tools/call {tool}: HTTP {status}: {raw[:300]!r}")
        return body, elapsed


class FaultsTest(unittest.TestCase):
    """Each test runs its own control + edge on a settings file with a healthy fixture `ok`
    and one broken one."""

    def start(self, servers, hub_settings=None):
        settings = {"mcpServers": {"ok": fixture("ok"), **servers}}
        if hub_settings:
            settings["hub"] = hub_settings
        self.dir, self.ctl, self.edge = hub.start_hub(settings, edge_id="edge-faults")
        self.seen = {}  # every fixture process control ran during the test: pid -> server
        self.client = Client(self.edge.port)

    def track(self):
        """Records control's fixture children (to check at the end that all are gone)."""
        self.seen.update(fixture_children(self.ctl.proc.pid))

    def tearDown(self):
        if getattr(self, "ctl", None):
            self.track()
            # While control runs, every child it has is reaped: no zombie stays behind.
            try:
                wait_for(lambda: not [p for p in hub.children_of(self.ctl.proc.pid)
                                      if proc_state(p) == "Z"],
                         timeout=3, what="control to reap its children")
                self.assertEqual(self.edge.stop(), 0, self.edge.log())
                self.assertEqual(self.ctl.stop(), 0, self.ctl.log())
                # Control is gone, so a fixture still alive would have been reparented: look
                # for every pid it ever ran.
                left = lambda: [p for p in self.seen if proc_state(p) not in (None, "Z")
                                and self._is_fixture(p)]
                wait_for(lambda: not left(), timeout=5,
                         what=f"every fixture of the test to exit (left: {left()})")
            finally:
                self.dir.cleanup()
        hub.assert_no_children()

    @staticmethod
    def _is_fixture(pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return f.read().split(b"\0")[0].endswith(b"/mcphub-fixture")
        except OSError:
            return False

    def wait_replaced(self, name, old, timeout):
        """Waits until server `name` runs in a process other than old and old is gone
        (reaped, not a zombie); returns the new pid."""
        def new_pid():
            self.track()
            pids = [p for p in server_pids(self.ctl.proc.pid, name) if p != old]
            return pids[0] if pids and proc_state(old) is None else None
        return wait_for(new_pid, timeout=timeout, what=f"{name}: pid {old} to be replaced")

    def fresh_instance(self, name, within=0.4, timeout=10):
        """Waits until server `name` runs a process started less than `within` seconds ago
        (so it is still initializing, not failed and waiting for its restart); returns it."""
        pattern = r'msg="upstream started" server=%s pid=(\d+)' % name

        def fresh():
            starts = log_times(self.ctl, pattern)
            if not starts or time.time() - starts[-1][0] > within:
                return None
            return int(re.search(pattern, starts[-1][1]).group(1))
        return wait_for(fresh, timeout=timeout, what=f"a fresh {name} instance")

    def test_upstream_that_never_answers_initialize(self):
        self.start({"hang": fixture("hang", "--hang-initialize")}, {"initTimeout": 1000})
        first = self.fresh_instance("hang")
        self.track()

        # A call to the server that hangs, and calls to the healthy one meanwhile.
        hung = {}

        def call_hung():
            try:
                hung["answer"], hung["secs"] = self.client.call("hang-echo", {"message": "x"}, timeout=30)
            except Exception as e:  # reported by the main thread
                hung["exception"] = e
        waiter = threading.Thread(target=call_hung)
        waiter.start()
        ok = []
        while waiter.is_alive():
            answer, secs = self.client.call("ok-echo", {"message": "meanwhile"})
            self.assertEqual(text_of(answer), "meanwhile", answer)
            ok.append(secs)
            time.sleep(0.05)
        waiter.join()
        if "exception" in hung:
            raise hung["exception"]
        print(f"\n  call to the hung server: {hung['secs'] * 1000:.0f} ms, answer {hung['answer']}"
              f"\n  healthy server meanwhile: {summary(ok)}")
        self.assertIn("error", hung["answer"], "a JSON-RPC error, not a result")
        self.assertIsInstance(hung["answer"]["error"].get("code"), int)
        self.assertLess(hung["secs"], 5, "an error within a few seconds, not a hang")
        self.assertTrue(ok, "the healthy server answered while the call was waiting")

        second = self.wait_replaced("hang", first, timeout=10)
        print(f"  hang: pid {first} replaced by {second}")
        for t, line in log_times(self.ctl, r"server=hang\b")[:8]:
            print("  " + line)
        # The replacement hangs too: a call to it fails the same way.
        answer, secs = self.client.call("hang-echo", {"message": "x"}, timeout=30)
        self.assertIn("error", answer)
        self.assertLess(secs, 5)

    def test_upstream_that_floods_stdout(self):
        self.start({"flood": fixture("flood", "--flood-stdout", "0")})
        first = wait_for(lambda: server_pids(self.ctl.proc.pid, "flood"), what="flood's process")[0]
        self.ctl.wait_line(r'msg="upstream stderr" server=flood line="[^"]*msg=flood_start')
        latencies, rss_max, replaced, t_replaced = [], 0, None, None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            answer, secs = self.client.call("ok-echo", {"message": "during the flood"})
            self.assertEqual(text_of(answer), "during the flood", answer)
            latencies.append(secs)
            rss_max = max(rss_max, vm_rss(self.ctl.proc.pid))
            self.track()
            if replaced is None:
                # From control's log, not /proc: a flooding instance lives a few milliseconds
                # before it is failed, too short for polling to be sure to see it.
                started = re.findall(r'msg="upstream started" server=flood pid=(\d+)', self.ctl.log())
                others = [int(p) for p in started if int(p) != first]
                if others:
                    replaced, t_replaced = others[0], time.monotonic()
            # Keep calling a while after the restart: the new instance floods too.
            elif time.monotonic() - t_replaced > 2 and len(latencies) >= 20:
                break
            time.sleep(0.02)
        garbage = [l for _, l in log_times(
            self.ctl, r'msg="upstream (stdout line is not JSON-RPC|failed: [^"]*garbage)[^"]*" server=flood ')]
        print(f"\n  healthy server during the flood: {summary(latencies)}"
              f"\n  control VmRSS max {rss_max / MIB:.1f} MiB"
              f"\n  flood: pid {first} replaced by {replaced}")
        for line in garbage[:6]:
            print("  " + line)
        self.assertLess(rss_max, 300 * MIB, "control's memory stays bounded")
        self.assertIsNotNone(replaced, "the flooding instance is failed and restarted:\n"
                             + self.ctl.log()[-3000:])
        wait_for(lambda: proc_state(first) is None, timeout=10, what=f"flooding pid {first} to be gone")
        self.assertTrue(garbage, "the log says why: garbage / too-long output")

    def test_crash_loop_is_spaced(self):
        self.start({"crashy": fixture("crashy", "--exit-after-initialize")})
        first_start = self.ctl.wait_line(r'msg="upstream started" server=crashy ').group(0)
        cpu0, t0 = cpu_seconds(self.ctl.proc.pid), time.monotonic()
        ok = []
        while time.monotonic() - t0 < 5.5:
            answer, secs = self.client.call("ok-echo", {"message": "still here"})
            self.assertEqual(text_of(answer), "still here", answer)
            ok.append(secs)
            self.track()
            time.sleep(0.05)
        cpu = cpu_seconds(self.ctl.proc.pid) - cpu0
        starts = [t for t, _ in log_times(self.ctl, r'msg="upstream started" server=crashy ')]
        exits = log_times(self.ctl, r'msg="upstream exited" server=crashy .*status=3')
        window = [t - starts[0] for t in starts if t - starts[0] <= 5.0]
        restarts = window[1:]
        gaps = [b - a for a, b in zip(window, window[1:])]
        print(f"\n  restarts within 5 s of the first start: {len(restarts)} at "
              + ", ".join(f"{t:.2f} s" for t in restarts)
              + "\n  gaps " + ", ".join(f"{g:.2f} s" for g in gaps)
              + f"\n  control CPU over {time.monotonic() - t0:.1f} s: {cpu:.2f} s"
              + f"\n  healthy server meanwhile: {summary(ok)}")
        self.assertTrue(first_start)
        self.assertTrue(exits, "the fixture did exit with status 3:\n" + self.ctl.log()[-2000:])
        self.assertGreaterEqual(len(restarts), 1, "a crashed server is restarted")
        self.assertLessEqual(len(restarts), 6, "restarts are spaced (backoff), control does not spin")


if __name__ == "__main__":
    unittest.main(verbosity=2)
