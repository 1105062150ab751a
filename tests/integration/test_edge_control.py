"""mcphub-edge and mcphub-control together: readiness follows control's reachability,
and the same edge process recovers by itself when control is killed and started again;
an edge drains on SIGTERM."""

import http.client
import signal
import threading
import time
import unittest

import hub


class EdgeControlTest(unittest.TestCase):
    def tearDown(self):
        hub.assert_no_children()

    def test_readyz_follows_control(self):
        # Restarted on the same address below: a port no other test's listener or
        # connection can take meanwhile.
        ctl = hub.start_control(listen=f"127.0.0.1:{hub.restartable_port()}")
        port = ctl.gateway_port
        edge = hub.start_edge(port, edge_id="edge-it-1")
        try:
            status, headers, body = hub.http_get(edge.port, "/healthz")
            self.assertEqual(status, 200)
            self.assertEqual(headers["content-type"], "application/json")
            hub.wait_status(edge.port, "/readyz", 200, timeout=5)
            ctl.wait_line(r'msg="edge connected" edge=edge-it-1')

            # SIGKILL control: readiness drops within a second or two, liveness stays.
            ctl.kill()
            took = hub.wait_status(edge.port, "/readyz", 503, timeout=2.5)
            print(f"readyz 503 after control SIGKILL: {took:.3f}s")
            status, headers, _ = hub.http_get(edge.port, "/readyz")
            self.assertEqual(headers.get("retry-after"), "1")
            self.assertEqual(hub.http_get(edge.port, "/healthz")[0], 200)

            # Control back on the same address: the same edge process turns ready again.
            ctl = hub.start_control(listen=f"127.0.0.1:{port}")
            took = hub.wait_status(edge.port, "/readyz", 200, timeout=5)
            print(f"readyz 200 after control restart: {took:.3f}s")
            self.assertIsNone(edge.proc.poll(), "edge kept running")
            ctl.wait_line(r'msg="edge connected" edge=edge-it-1')

            # A graceful control stop also makes the edge unready, then ready again.
            self.assertEqual(ctl.stop(signal.SIGTERM), 0, ctl.log())
            hub.wait_status(edge.port, "/readyz", 503, timeout=2.5)
            ctl = hub.start_control(listen=f"127.0.0.1:{port}")
            hub.wait_status(edge.port, "/readyz", 200, timeout=5)

            self.assertEqual(hub.http_get(edge.port, "/nope")[0], 404)
        finally:
            self.assertEqual(edge.stop(signal.SIGTERM), 0, edge.log())
            self.assertEqual(ctl.stop(signal.SIGTERM), 0, ctl.log())

    def test_edge_starts_before_control(self):
        port = hub.restartable_port()
        edge = hub.start_edge(port, edge_id="edge-it-2")
        ctl = None
        try:
            time.sleep(0.3)
            self.assertEqual(hub.http_get(edge.port, "/readyz")[0], 503)
            ctl = hub.start_control(listen=f"127.0.0.1:{port}")
            hub.wait_status(edge.port, "/readyz", 200, timeout=5)
        finally:
            self.assertEqual(edge.stop(signal.SIGTERM), 0, edge.log())
            if ctl:
                self.assertEqual(ctl.stop(signal.SIGTERM), 0, ctl.log())


if __name__ == "__main__":
    unittest.main(verbosity=2)


class EdgeDrainTest(unittest.TestCase):
    """SIGTERM to an edge: /readyz turns 503, new requests get 503, the GET stream it holds
    closes at once (its client can resume on another edge), and a call in flight finishes
    with its result before the edge exits 0."""

    def setUp(self):
        self.dir, self.ctl, self.edge = hub.start_hub(
            {"mcpServers": {"fx": {"command": hub.binary("mcphub-fixture"), "args": ["--name", "fx"]}}},
            edge_id="edge-drain")

    def tearDown(self):
        self.edge.stop()
        self.assertEqual(self.ctl.stop(), 0, self.ctl.log())
        hub.assert_no_children()
        self.dir.cleanup()

    def test_sigterm_drains(self):
        port = self.edge.port
        st, h, _, _ = hub.request(port, "POST", "/mcp", hub.INIT, hub.post_headers())
        self.assertEqual(st, 200)
        sid = h["mcp-session-id"]
        hub.request(port, "POST", "/mcp", {"jsonrpc": "2.0", "method": "notifications/initialized"},
                    hub.post_headers(sid))
        stream = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        stream.request("GET", "/mcp", headers={"Accept": "text/event-stream", "Mcp-Session-Id": sid,
                                               "MCP-Protocol-Version": "2025-11-25"})
        sresp = stream.getresponse()
        self.assertEqual(sresp.status, 200)
        slow = {}

        def call():
            slow["answer"] = hub.request(port, "POST", "/mcp",
                                         {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                                          "params": {"name": "fx-slow", "arguments": {"steps": 4, "delayMs": 250}}},
                                         hub.post_headers(sid), timeout=15)

        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.3)  # the call is running upstream
        t0 = time.monotonic()
        self.edge.proc.send_signal(signal.SIGTERM)
        # The standalone stream ends at once.
        sresp.read()
        closed = time.monotonic() - t0
        stream.close()
        # Meanwhile the edge is not ready and takes no new work.
        self.assertEqual(hub.http_get(port, "/readyz")[0], 503)
        st, _, body, _ = hub.request(port, "POST", "/mcp", {"jsonrpc": "2.0", "id": 8, "method": "ping"},
                                     hub.post_headers(sid))
        self.assertEqual(st, 503)
        # The call in flight finishes with its result.
        t.join(15)
        st, _, body, raw = slow["answer"]
        self.assertEqual(st, 200, raw)
        self.assertIn(b'"result"', raw)
        self.assertEqual(self.edge.proc.wait(10), 0)
        print(f"\n  drain: GET stream closed {closed * 1000:.0f} ms after SIGTERM; the running "
              f"call finished, edge exited 0 {(time.monotonic() - t0) * 1000:.0f} ms after it")
        # The session lives on at control: another edge serves it.
        edge2 = hub.start_edge(self.ctl.gateway_port, edge_id="edge-after")
        hub.wait_status(edge2.port, "/readyz", 200, timeout=10)
        st, _, _, _ = hub.request(edge2.port, "POST", "/mcp", {"jsonrpc": "2.0", "id": 9, "method": "ping"},
                                  hub.post_headers(sid))
        self.assertEqual(st, 200)
        self.assertEqual(edge2.stop(), 0)
