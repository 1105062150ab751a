"""W3C trace context: a client's `traceparent` (and `tracestate`) header on a request reaches
the upstream server as params._meta of the forwarded request, through edge and control; a
malformed one goes nowhere; a client that put its own trace context in _meta keeps it. The
fixture logs the trace context each tools/call carries, and control logs the fixture's stderr."""

import json
import os
import tempfile
import unittest

import hub
from hub import INIT, post_headers, request

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
OWN = "00-11111111111111111111111111111111-2222222222222222-00"


def call(name, rid, args, meta=None):
    params = {"name": name, "arguments": args}
    if meta:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}


class TraceContextTest(unittest.TestCase):
    def setUp(self):
        self.dir, self.ctl, self.edge = hub.start_hub(
            {"mcpServers": {"fx": {"command": hub.binary("mcphub-fixture"), "args": ["--name", "fx"]}}})
        st, h, _, _ = request(self.edge.port, "POST", "/mcp", INIT, post_headers())
        self.assertEqual(st, 200)
        self.sid = h["mcp-session-id"]

    def tearDown(self):
        codes = self.edge.stop(), self.ctl.stop()
        self.assertEqual(codes, (0, 0), self.edge.log() + self.ctl.log())
        hub.assert_no_children()
        self.dir.cleanup()

    def post(self, body, **headers):
        st, _, parsed, raw = request(self.edge.port, "POST", "/mcp", body,
                                     post_headers(self.sid, **headers))
        self.assertEqual(st, 200, raw)
        return parsed

    def test_header_reaches_the_upstream(self):
        self.post(call("fx-echo", 2, {"message": "traced"}), traceparent=TP, tracestate="rojo=00f067aa0ba902b7")
        line = self.ctl.wait_line(r"msg=trace tool=echo traceparent=(\S+) tracestate=\\?\"([^\"\\]*)")
        self.assertEqual(line.group(1), TP)
        self.assertEqual(line.group(2), "rojo=00f067aa0ba902b7")

    def test_malformed_header_goes_nowhere(self):
        for bad in ["00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
                    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff
                    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"]:
            self.post(call("fx-add", 3, {"a": 1, "b": 2}), traceparent=bad)
        # A good one afterwards proves the fixture's log is flowing; none of the bad ones came.
        self.post(call("fx-echo", 4, {"message": "x"}), traceparent=TP)
        self.ctl.wait_line(r"msg=trace tool=echo")
        self.assertNotIn("msg=trace tool=add", self.ctl.log())

    def test_the_clients_own_meta_wins(self):
        self.post(call("fx-echo", 5, {"message": "own"}, meta={"traceparent": OWN}), traceparent=TP)
        line = self.ctl.wait_line(r"msg=trace tool=echo traceparent=(\S+)")
        self.assertEqual(line.group(1), OWN)


class RequestLogTest(unittest.TestCase):
    """At debug level the edge and control log each request with the edge's stream id, so
    one call can be followed across both daemons (and to its session and server)."""

    def test_one_call_in_both_logs(self):
        d = tempfile.TemporaryDirectory()
        path = os.path.join(d.name, "mcp_settings.json")
        with open(path, "w") as f:
            json.dump({"mcpServers": {"fx": {"command": hub.binary("mcphub-fixture"), "args": ["--name", "fx"]}}}, f)
        env = {"MCPHUB_LOG_LEVEL": "debug"}
        ctl = hub.start_control(["--config", path], env=env)
        edge = hub.start_edge(ctl.gateway_port, edge_id="edge-log", env=env)
        try:
            hub.wait_status(edge.port, "/readyz", 200, timeout=10)
            st, h, _, _ = request(edge.port, "POST", "/mcp", INIT, post_headers())
            sid = h["mcp-session-id"]
            st, _, _, raw = request(edge.port, "POST", "/mcp", call("fx-echo", 2, {"message": "log"}),
                                    post_headers(sid))
            self.assertEqual(st, 200, raw)
            stream = edge.wait_line(r'msg="request answered" method=tools/call status=200 stream=(\S+)').group(1)
            ended = ctl.wait_line(r'msg="request ended" session=(\S+) stream=' + stream + r' server=(\S+)')
            self.assertEqual((ended.group(1), ended.group(2)), (sid, "fx"))
        finally:
            self.assertEqual(edge.stop(), 0, edge.log())
            self.assertEqual(ctl.stop(), 0, ctl.log())
            hub.assert_no_children()
            d.cleanup()


if __name__ == "__main__":
    unittest.main()
