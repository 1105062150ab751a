"""mcphub-edge and mcphub-control together: readiness follows control's reachability,
and the same edge process recovers by itself when control is killed and started again."""

import signal
import time
import unittest

import hub


class EdgeControlTest(unittest.TestCase):
    def tearDown(self):
        hub.assert_no_children()

    def test_readyz_follows_control(self):
        ctl = hub.start_control()
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
        port = hub.free_port()
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
