"""mcphub-control routing MCP requests to a real stdio upstream (the C fixture), driven
through the Gateway service exactly as an edge drives it: aggregation and naming, calls,
progress, server->client requests, cancellation, crash and restart, and no upstream
process left behind after control stops, by SIGTERM or by SIGKILL."""

import json
import os
import signal
import tempfile
import time
import unittest

import grpc

import hub
from hub import wait_for
from pb import admin_pb2, gateway_pb2
from test_control_grpc import Subscriber, initialize_json, unary


def fixture_pids():
    """PIDs of running mcphub-fixture processes whose parent is gone or is a given pid."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0")[0].decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if argv0.endswith("/mcphub-fixture") and fields[0] != "Z":
            out[int(entry)] = int(fields[1])
    return out


def children_fixtures(ppid):
    return [pid for pid, parent in fixture_pids().items() if parent == ppid]


class Hub:
    """A control on a settings file with the fixture twice (one of them per group)."""

    def __init__(self, test, extra_servers=None):
        fixture = os.path.join(hub.BIN_DIR, "mcphub-fixture")
        settings = {
            "mcpServers": {
                "fx": {"command": fixture, "args": ["--name", "fx"]},
                "other": {"command": fixture, "args": ["--name", "other"],
                          "tools": {"crash": {"enabled": False}}},
                "quick": {"command": fixture, "options": {"timeout": 300}},
            },
            "groups": [{"name": "g", "servers": [{"name": "fx", "tools": ["echo", "slow"]}]}],
        }
        settings["mcpServers"].update(extra_servers or {})
        self.dir = tempfile.TemporaryDirectory()
        path = os.path.join(self.dir.name, "mcp_settings.json")
        with open(path, "w") as f:
            json.dump(settings, f)
        self.ctl = hub.start_control(["--config", path])
        self.gw = grpc.insecure_channel(f"127.0.0.1:{self.ctl.gateway_port}")
        self.adm = grpc.insecure_channel(f"127.0.0.1:{self.ctl.admin_port}")
        self.edge = Subscriber(self.gw, "py-edge")
        self.edge.wait(lambda ev: ev.HasField("hello"))
        self._request = self.gw.unary_stream(
            "/mcphub.v1.Gateway/Request",
            request_serializer=gateway_pb2.ClientRequest.SerializeToString,
            response_deserializer=gateway_pb2.StreamMessage.FromString)
        self.next_id = 1

    def open(self, route="", caps=None):
        init = json.loads(initialize_json("2025-11-25"))
        init["params"]["capabilities"] = caps or {}
        return unary(self.gw, "/mcphub.v1.Gateway/OpenSession",
                     gateway_pb2.OpenSessionRequest(route=route, initialize_json=json.dumps(init)),
                     gateway_pb2.OpenSessionReply).session_id

    def start(self, sid, method, params=None, timeout=10):
        """Starts a request; returns the response iterator (a grpc stream call)."""
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            msg["params"] = params
        return self._request(gateway_pb2.ClientRequest(
            session_id=sid, stream_id=f"post-{self.next_id}", message_json=json.dumps(msg)),
            timeout=timeout)

    def call(self, sid, method, params=None):
        """Runs a request to its end; returns (final message, earlier messages)."""
        out = [json.loads(m.message_json) for m in self.start(sid, method, params)]
        return out[-1], out[:-1]

    def post(self, sid, msg):
        unary(self.gw, "/mcphub.v1.Gateway/Post",
              gateway_pb2.ClientMessage(session_id=sid, message_json=json.dumps(msg)),
              gateway_pb2.ClientMessageReply)

    def servers(self):
        return {s.name: s for s in unary(self.adm, "/mcphub.v1.Admin/ListServers",
                                         admin_pb2.ListServersRequest(), admin_pb2.ListServersReply).servers}

    def close(self, sig=signal.SIGTERM):
        self.gw.close()
        self.adm.close()
        code = self.ctl.stop(sig)
        self.dir.cleanup()
        return code


class ControlMcpTest(unittest.TestCase):
    def setUp(self):
        self.hub = Hub(self)

    def tearDown(self):
        if self.hub:
            self.hub.close()
        hub.assert_no_children()

    def tools(self, sid):
        final, _ = self.hub.call(sid, "tools/list", {})
        return [t["name"] for t in final["result"]["tools"]]

    def test_aggregation_and_naming(self):
        h = self.hub
        names = self.tools(h.open(""))
        self.assertIn("fx-echo", names)
        self.assertIn("other-echo", names)
        self.assertIn("fx-crash", names)
        self.assertNotIn("other-crash", names, "disabled by the tools override")
        self.assertEqual(sorted(self.tools(h.open("g"))), ["fx-echo", "fx-slow"])
        single = self.tools(h.open("fx"))
        self.assertIn("echo", single)
        self.assertNotIn("fx-echo", single)
        servers = h.servers()
        self.assertEqual(servers["fx"].state, "ready")
        self.assertEqual(servers["fx"].tool_count, len(single))

    def test_calls_route_to_the_right_server(self):
        h = self.hub
        sid = h.open("")
        final, _ = h.call(sid, "tools/call", {"name": "fx-echo", "arguments": {"message": "hi"}})
        self.assertEqual(final["result"]["content"][0]["text"], "hi")
        a, _ = h.call(sid, "tools/call", {"name": "fx-counter", "arguments": {}})
        b, _ = h.call(sid, "tools/call", {"name": "other-counter", "arguments": {}})
        pid_a = a["result"]["content"][0]["text"].split("pid=")[1]
        pid_b = b["result"]["content"][0]["text"].split("pid=")[1]
        self.assertNotEqual(pid_a, pid_b, "two servers, two processes")
        final, _ = h.call(sid, "tools/call", {"name": "other-crash", "arguments": {}})
        self.assertEqual(final["error"]["code"], -32602)
        final, _ = h.call(sid, "tools/call", {"name": "fx-fail", "arguments": {"message": "boom"}})
        self.assertTrue(final["result"]["isError"])
        # The client's id comes back whatever the upstream used.
        self.assertEqual(final["id"], h.next_id)

    def test_progress_reaches_the_caller(self):
        h = self.hub
        sid = h.open("fx")
        final, before = h.call(sid, "tools/call", {"name": "slow", "arguments": {"steps": 3, "delayMs": 20},
                                                   "_meta": {"progressToken": "my-token"}})
        self.assertEqual(final["result"]["content"][0]["text"], "done after 3 steps")
        progress = [m["params"]["progress"] for m in before if m.get("method") == "notifications/progress"]
        self.assertEqual(progress, [1, 2, 3])
        self.assertTrue(all(m["params"]["progressToken"] == "my-token" for m in before))

    def test_sampling_round_trip(self):
        h = self.hub
        sid = h.open("fx", caps={"sampling": {}})
        stream = h.start(sid, "tools/call", {"name": "sample", "arguments": {"prompt": "2+2?"}})
        first = next(stream)
        ask = json.loads(first.message_json)
        self.assertFalse(first.final)
        self.assertEqual(ask["method"], "sampling/createMessage")
        self.assertTrue(str(ask["id"]).startswith("hub-"))
        h.post(sid, {"jsonrpc": "2.0", "id": ask["id"], "result": {
            "role": "assistant", "model": "m", "content": {"type": "text", "text": "four"}}})
        final = json.loads(list(stream)[-1].message_json)
        self.assertEqual(final["result"]["content"][0]["text"], "sampled: four")

        # A client without the capability is never asked.
        plain = h.open("fx")
        final, before = h.call(plain, "tools/call", {"name": "sample", "arguments": {"prompt": "x"}})
        self.assertEqual(before, [])
        self.assertTrue(final["result"]["isError"])

    def test_cancellation_reaches_the_upstream(self):
        h = self.hub
        sid = h.open("fx")
        stream = h.start(sid, "tools/call", {"name": "slow", "arguments": {"steps": 50, "delayMs": 100}})
        time.sleep(0.2)
        h.post(sid, {"jsonrpc": "2.0", "method": "notifications/cancelled",
                     "params": {"requestId": h.next_id, "reason": "user"}})
        msgs = [json.loads(m.message_json) for m in stream]
        self.assertFalse(any("result" in m or "error" in m for m in msgs), msgs)
        final, _ = h.call(sid, "ping")
        self.assertEqual(final["result"], {})
        # The client going away cancels too, and the server keeps answering.
        stream = h.start(sid, "tools/call", {"name": "slow", "arguments": {"steps": 50, "delayMs": 100}})
        time.sleep(0.2)
        stream.cancel()
        final, _ = h.call(sid, "tools/call", {"name": "echo", "arguments": {"message": "still here"}})
        self.assertEqual(final["result"]["content"][0]["text"], "still here")

    def test_crash_is_an_error_then_a_restart(self):
        h = self.hub
        sid = h.open("fx")
        t0 = time.monotonic()
        final, _ = h.call(sid, "tools/call", {"name": "crash", "arguments": {}})
        self.assertLess(time.monotonic() - t0, 3)
        self.assertEqual(final["error"]["code"], -32000)
        # Restarted with backoff; the next call works.
        def echo_works():
            f, _ = h.call(sid, "tools/call", {"name": "echo", "arguments": {"message": "back"}})
            return f.get("result", {}).get("content", [{}])[0].get("text") == "back"
        wait_for(echo_works, timeout=10, what="the restarted fixture")
        h.ctl.wait_line(r'msg="upstream failed: restarting" server=fx')

    def test_upstreams_stop_with_control(self):
        h = self.hub
        pids = wait_for(lambda: len(children_fixtures(h.ctl.proc.pid)) == 3
                        and children_fixtures(h.ctl.proc.pid), what="three fixtures")
        self.assertEqual(h.close(signal.SIGTERM), 0, h.ctl.log())
        self.hub = None
        for pid in pids:
            self.assertFalse(os.path.exists(f"/proc/{pid}") and pid in fixture_pids(),
                             f"fixture {pid} outlived control")

    def test_timeout_is_an_error_and_cancels_upstream(self):
        h = self.hub
        sid = h.open("quick")
        t0 = time.monotonic()
        final, _ = h.call(sid, "tools/call", {"name": "slow", "arguments": {"steps": 20, "delayMs": 100}})
        self.assertEqual(final["error"]["code"], -32001)
        self.assertLess(time.monotonic() - t0, 1.5)
        final, _ = h.call(sid, "tools/call", {"name": "echo", "arguments": {"message": "next"}})
        self.assertEqual(final["result"]["content"][0]["text"], "next")

    def test_list_changed_reaches_open_streams(self):
        h = self.hub
        sid = h.open("")
        unary(h.gw, "/mcphub.v1.Gateway/AttachStream",
              gateway_pb2.AttachStreamRequest(session_id=sid, edge_id="py-edge", stream_id="get-1"),
              gateway_pb2.AttachStreamReply)
        final, _ = h.call(sid, "tools/call", {"name": "fx-notify_list_changed", "arguments": {"list": "tools"}})
        self.assertIn("result", final)
        ev = h.edge.wait(lambda ev: ev.HasField("stream_message") and ev.stream_message.session_id == sid)
        self.assertEqual(json.loads(ev.stream_message.message_json)["method"],
                         "notifications/tools/list_changed")
        self.assertEqual(ev.stream_message.stream_id, "get-1")

    def test_sigterm_lets_running_calls_finish(self):
        h = self.hub
        sid = h.open("fx")
        h.call(sid, "ping")
        stream = h.start(sid, "tools/call", {"name": "slow", "arguments": {"steps": 8, "delayMs": 100}})
        time.sleep(0.2)
        h.ctl.proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        # No new work is taken while draining...
        with self.assertRaises(grpc.RpcError) as cm:
            h.call(sid, "ping")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        # ...but the call in flight finishes, then the session's end is broadcast.
        final = json.loads(list(stream)[-1].message_json)
        self.assertEqual(final["result"]["content"][0]["text"], "done after 8 steps")
        ev = h.edge.wait(lambda ev: ev.HasField("session_ended") and ev.session_ended.session_id == sid)
        self.assertEqual(ev.session_ended.reason, gateway_pb2.END_REASON_SHUTDOWN)
        self.assertEqual(h.ctl.proc.wait(10), 0, h.ctl.log())

    def test_sigkill_of_control_leaves_no_upstream(self):
        h = self.hub
        pids = wait_for(lambda: len(children_fixtures(h.ctl.proc.pid)) == 3
                        and children_fixtures(h.ctl.proc.pid), what="three fixtures")
        h.close(signal.SIGKILL)
        self.hub = None
        wait_for(lambda: not any(p in fixture_pids() for p in pids), timeout=5,
                 what="fixtures to die with control (PR_SET_PDEATHSIG)")


if __name__ == "__main__":
    unittest.main(verbosity=2)
