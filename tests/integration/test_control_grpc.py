"""mcphub-control seen by a gRPC client nobody here wrote (Debian's python3-grpcio): the
standard Health service, Admin, the Gateway's session calls and the session-ended
broadcast, configuration errors, and SIGTERM with live streams."""

import json
import os
import re
import signal
import tempfile
import threading
import time
import unittest

import grpc

import hub
from pb import admin_pb2, gateway_pb2, health_pb2

SRC = os.environ["MCPHUB_SOURCE_DIR"]


def unary(channel, path, req, resp_cls, timeout=5):
    call = channel.unary_unary(path, request_serializer=type(req).SerializeToString,
                               response_deserializer=resp_cls.FromString)
    return call(req, timeout=timeout)


def health(channel, service=""):
    return unary(channel, "/grpc.health.v1.Health/Check",
                 health_pb2.HealthCheckRequest(service=service),
                 health_pb2.HealthCheckResponse).status


def initialize_json(version="2025-06-18", rid=1):
    return ('{"jsonrpc":"2.0","id":%d,"method":"initialize","params":{"protocolVersion":"%s",'
            '"capabilities":{},"clientInfo":{"name":"py","version":"1"}}}' % (rid, version))


class Subscriber:
    """Holds a Gateway.Subscribe stream the way an edge does, collecting its events."""

    def __init__(self, channel, edge_id):
        call = channel.unary_stream("/mcphub.v1.Gateway/Subscribe",
                                    request_serializer=gateway_pb2.SubscribeRequest.SerializeToString,
                                    response_deserializer=gateway_pb2.EdgeEvent.FromString)
        self.stream = call(gateway_pb2.SubscribeRequest(edge_id=edge_id))
        self.events = []
        self.error = None
        self.cv = threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for ev in self.stream:
                with self.cv:
                    self.events.append(ev)
                    self.cv.notify_all()
        except grpc.RpcError as e:
            self.error = e
        with self.cv:
            self.cv.notify_all()

    def wait(self, pred, timeout=5):
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                for ev in self.events:
                    if pred(ev):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0 or not self.thread.is_alive():
                    raise AssertionError(f"no such event; got {self.events}, error {self.error}")
                self.cv.wait(left)


class ControlGrpcTest(unittest.TestCase):
    def tearDown(self):
        hub.assert_no_children()

    def test_health_and_list_servers_on_default_config(self):
        ctl = hub.start_control()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{ctl.gateway_port}") as gw, \
                    grpc.insecure_channel(f"127.0.0.1:{ctl.admin_port}") as adm:
                SERVING = health_pb2.HealthCheckResponse.SERVING
                self.assertEqual(health(gw), SERVING)
                self.assertEqual(health(gw, "mcphub.v1.Gateway"), SERVING)
                self.assertEqual(health(adm), SERVING)
                with self.assertRaises(grpc.RpcError) as cm:
                    health(gw, "no.such.Service")
                self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)

                reply = unary(adm, "/mcphub.v1.Admin/ListServers", admin_pb2.ListServersRequest(),
                              admin_pb2.ListServersReply)
                by_name = {s.name: s for s in reply.servers}
                self.assertIn("fixture", by_name)
                fx = by_name["fixture"]
                self.assertEqual(fx.transport, admin_pb2.SERVER_TRANSPORT_STDIO)
                self.assertTrue(fx.enabled)
                # the shared instance is running (or on its way there)
                self.assertIn(fx.state, ("initializing", "ready"))
                self.assertTrue(fx.command.endswith("/mcphub-fixture"), fx.command)
                self.assertTrue(os.access(fx.command, os.X_OK), "default config names the built fixture")

                st = unary(adm, "/mcphub.v1.Admin/GetStats", admin_pb2.GetStatsRequest(), admin_pb2.Stats)
                self.assertEqual(st.servers, 1)
                self.assertEqual(st.config_path, "")
                # Admin is not served on the Gateway listener, and vice versa.
                with self.assertRaises(grpc.RpcError) as cm:
                    unary(gw, "/mcphub.v1.Admin/GetStats", admin_pb2.GetStatsRequest(), admin_pb2.Stats)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        finally:
            self.assertEqual(ctl.stop(), 0, ctl.log())

    def test_full_mcphub_settings_file(self):
        # Every field MCPHub writes, as the file has it, except where it would reach outside
        # this machine: commands become the fixture, URLs a closed loopback port.
        src = os.path.join(SRC, "tests/unit/cfg_cases/valid/mcphub-settings-full.json")
        with open(src) as f:
            settings = json.load(f)
        for name, srv in settings["mcpServers"].items():
            if "command" in srv:
                srv["command"] = hub.binary("mcphub-fixture")
                srv["args"] = ["--name", name]
                srv.pop("cwd", None)
            if "url" in srv:
                srv["url"] = "http://127.0.0.1:1/" + srv["url"].rsplit("/", 1)[-1]
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(settings, f)
            path = f.name
        self.addCleanup(os.unlink, path)
        ctl = hub.start_control(["--config", path])
        try:
            with grpc.insecure_channel(f"127.0.0.1:{ctl.admin_port}") as adm:
                reply = unary(adm, "/mcphub.v1.Admin/ListServers", admin_pb2.ListServersRequest(),
                              admin_pb2.ListServersReply)
                unsupported = [s for s in reply.servers
                               if s.transport == admin_pb2.SERVER_TRANSPORT_UNSUPPORTED]
                self.assertTrue(unsupported, "the example has an openapi server")
                for s in unsupported:
                    self.assertEqual(s.state, "unsupported")
                    self.assertTrue(s.skip_reason)
                    ctl.wait_line(r'msg="server skipped" server=%s ' % s.name)
                self.assertGreater(len(reply.servers), len(unsupported))
                st = unary(adm, "/mcphub.v1.Admin/GetStats", admin_pb2.GetStatsRequest(), admin_pb2.Stats)
                self.assertEqual(st.config_path, path)
        finally:
            self.assertEqual(ctl.stop(), 0, ctl.log())

    def test_session_end_is_broadcast_to_every_edge(self):
        ctl = hub.start_control()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{ctl.gateway_port}") as gw, \
                    grpc.insecure_channel(f"127.0.0.1:{ctl.admin_port}") as adm:
                edges = [Subscriber(gw, "py-edge-a"), Subscriber(gw, "py-edge-b")]
                hellos = [e.wait(lambda ev: ev.HasField("hello")) for e in edges]
                self.assertEqual(hellos[0].hello.control_id, hellos[1].hello.control_id)
                self.assertEqual(hellos[0].seq, 1)
                settings = hellos[0].hello.settings
                self.assertEqual(sorted(settings.routes), ["", "default", "fixture"])
                self.assertFalse(settings.bearer_auth)
                self.assertEqual(settings.json_body_limit, 1024 * 1024)

                opened = unary(gw, "/mcphub.v1.Gateway/OpenSession",
                               gateway_pb2.OpenSessionRequest(edge_id="py-edge-a", route="",
                                                              initialize_json=initialize_json()),
                               gateway_pb2.OpenSessionReply)
                self.assertRegex(opened.session_id, r"^[A-Za-z0-9_-]{22}$")
                self.assertEqual(opened.protocol_version, "2025-06-18")
                self.assertIn('"protocolVersion":"2025-06-18"', opened.response_json)
                self.assertIn('"id":1', opened.response_json)

                # An unknown revision is answered with the newest one.
                other = unary(gw, "/mcphub.v1.Gateway/OpenSession",
                              gateway_pb2.OpenSessionRequest(route="fixture",
                                                             initialize_json=initialize_json("1999-01-01", 2)),
                              gateway_pb2.OpenSessionReply)
                self.assertEqual(other.protocol_version, "2025-11-25")
                self.assertNotEqual(other.session_id, opened.session_id)

                st = unary(adm, "/mcphub.v1.Admin/GetStats", admin_pb2.GetStatsRequest(), admin_pb2.Stats)
                self.assertEqual((st.edges, st.sessions), (2, 2))

                # Any edge may end it, once.
                ended = unary(gw, "/mcphub.v1.Gateway/EndSession",
                              gateway_pb2.EndSessionRequest(edge_id="py-edge-b", session_id=opened.session_id),
                              gateway_pb2.EndSessionReply)
                self.assertTrue(ended.existed)
                for e in edges:
                    ev = e.wait(lambda ev: ev.HasField("session_ended"))
                    self.assertEqual(ev.session_ended.session_id, opened.session_id)
                    self.assertEqual(ev.session_ended.reason, gateway_pb2.END_REASON_CLIENT_DELETE)
                again = unary(gw, "/mcphub.v1.Gateway/EndSession",
                              gateway_pb2.EndSessionRequest(session_id=opened.session_id),
                              gateway_pb2.EndSessionReply)
                self.assertFalse(again.existed)

                # Bad input gets a precise status and changes nothing.
                for req, code in [
                    (gateway_pb2.OpenSessionRequest(initialize_json="{not json"), grpc.StatusCode.INVALID_ARGUMENT),
                    (gateway_pb2.OpenSessionRequest(initialize_json='{"jsonrpc":"2.0","id":1,"method":"ping"}'),
                     grpc.StatusCode.INVALID_ARGUMENT),
                    (gateway_pb2.OpenSessionRequest(route="nope", initialize_json=initialize_json()),
                     grpc.StatusCode.NOT_FOUND),
                ]:
                    with self.assertRaises(grpc.RpcError) as cm:
                        unary(gw, "/mcphub.v1.Gateway/OpenSession", req, gateway_pb2.OpenSessionReply)
                    self.assertEqual(cm.exception.code(), code)
                with self.assertRaises(grpc.RpcError) as cm:
                    unary(gw, "/mcphub.v1.Gateway/NoSuchMethod", gateway_pb2.ClientRequest(),
                          gateway_pb2.StreamMessage)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
                st = unary(adm, "/mcphub.v1.Admin/GetStats", admin_pb2.GetStatsRequest(), admin_pb2.Stats)
                self.assertEqual((st.edges, st.sessions, st.broadcasts), (2, 1, 1))

                # SIGTERM: the remaining session's end is broadcast, streams close, exit 0.
                t0 = time.monotonic()
                self.assertEqual(ctl.stop(signal.SIGTERM), 0, ctl.log())
                self.assertLess(time.monotonic() - t0, 5)
                for e in edges:
                    ev = e.wait(lambda ev: ev.HasField("session_ended")
                                and ev.session_ended.session_id == other.session_id)
                    self.assertEqual(ev.session_ended.reason, gateway_pb2.END_REASON_SHUTDOWN)
                    e.thread.join(5)
                    self.assertFalse(e.thread.is_alive(), "stream closed by shutdown")
        finally:
            ctl.stop()

    def test_bearer_keys_guard_sessions(self):
        settings = {
            "mcpServers": {"a": {"command": "/bin/true"}, "b": {"command": "/bin/true"}},
            "groups": [{"name": "ga", "servers": ["a"]}],
            "bearerKeys": [
                {"name": "all", "token": "tok-all", "accessType": "all"},
                {"name": "only-a", "token": "tok-a", "accessType": "groups", "allowedGroups": ["ga"]},
            ],
            "systemConfig": {"routing": {"enableBearerAuth": True}},
        }
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "mcp_settings.json")
            with open(path, "w") as f:
                json.dump(settings, f)
            ctl = hub.start_control(["--config", path])
            try:
                with grpc.insecure_channel(f"127.0.0.1:{ctl.gateway_port}") as gw:
                    def open_session(token, route):
                        return unary(gw, "/mcphub.v1.Gateway/OpenSession",
                                     gateway_pb2.OpenSessionRequest(
                                         route=route, initialize_json=initialize_json(),
                                         principal=gateway_pb2.Principal(bearer_token=token)),
                                     gateway_pb2.OpenSessionReply)

                    def code_of(fn, *args):
                        with self.assertRaises(grpc.RpcError) as cm:
                            fn(*args)
                        return cm.exception.code()

                    self.assertEqual(code_of(open_session, "", "ga"), grpc.StatusCode.UNAUTHENTICATED)
                    self.assertEqual(code_of(open_session, "tok-nope", "ga"), grpc.StatusCode.UNAUTHENTICATED)
                    self.assertEqual(code_of(open_session, "tok-a", "b"), grpc.StatusCode.PERMISSION_DENIED)
                    self.assertEqual(code_of(open_session, "tok-a", ""), grpc.StatusCode.PERMISSION_DENIED)
                    mine = open_session("tok-a", "ga")
                    open_session("tok-a", "a")  # a server of an allowed group
                    open_session("tok-all", "")

                    def end(token):
                        return unary(gw, "/mcphub.v1.Gateway/EndSession",
                                     gateway_pb2.EndSessionRequest(
                                         session_id=mine.session_id,
                                         principal=gateway_pb2.Principal(bearer_token=token)),
                                     gateway_pb2.EndSessionReply)

                    # A session is bound to the key that opened it.
                    self.assertEqual(code_of(end, ""), grpc.StatusCode.UNAUTHENTICATED)
                    self.assertEqual(code_of(end, "tok-all"), grpc.StatusCode.PERMISSION_DENIED)
                    self.assertTrue(end("tok-a").existed)
            finally:
                self.assertEqual(ctl.stop(), 0, ctl.log())

    def test_requests_streams_and_legacy_sessions(self):
        ctl = hub.start_control()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{ctl.gateway_port}") as gw:
                edge = Subscriber(gw, "py-edge")
                edge.wait(lambda ev: ev.HasField("hello"))
                opened = unary(gw, "/mcphub.v1.Gateway/OpenSession",
                               gateway_pb2.OpenSessionRequest(initialize_json=initialize_json("2025-11-25")),
                               gateway_pb2.OpenSessionReply)
                sid = opened.session_id
                request = gw.unary_stream("/mcphub.v1.Gateway/Request",
                                          request_serializer=gateway_pb2.ClientRequest.SerializeToString,
                                          response_deserializer=gateway_pb2.StreamMessage.FromString)

                def call(method, params=None, rid=7, session=sid):
                    msg = {"jsonrpc": "2.0", "id": rid, "method": method}
                    if params is not None:
                        msg["params"] = params
                    out = list(request(gateway_pb2.ClientRequest(
                        session_id=session, stream_id="post-1", message_json=json.dumps(msg)), timeout=5))
                    self.assertTrue(out[-1].final)
                    return [json.loads(m.message_json) for m in out], out

                msgs, raw = call("ping")
                self.assertEqual(msgs, [{"jsonrpc": "2.0", "id": 7, "result": {}}])
                self.assertEqual(raw[0].event_id, "", "an answer alone goes out as JSON: no event id")
                # An answer after progress is a stream: every message has an event id.
                msgs, raw = call("tools/call", {"name": "fixture-slow", "arguments": {"steps": 2, "delayMs": 10},
                                                "_meta": {"progressToken": "t"}})
                self.assertEqual([m.get("method") for m in msgs[:-1]], ["notifications/progress"] * 2)
                self.assertEqual(msgs[-1]["result"]["content"][0]["text"], "done after 2 steps")
                self.assertTrue(all(re.match(r"^post-1/\d+$", m.event_id) for m in raw), raw)
                msgs, _ = call("tools/list", {}, rid="s-1")
                self.assertEqual(msgs[0]["id"], "s-1")
                self.assertIsInstance(msgs[0]["result"]["tools"], list)
                msgs, _ = call("tools/list", {"cursor": "bogus"})
                self.assertEqual(msgs[0]["error"]["code"], -32602)
                msgs, _ = call("no/such/method")
                self.assertEqual(msgs[0]["error"]["code"], -32601)
                msgs, _ = call("tools/call", {"name": "nope-nothing", "arguments": {}})
                self.assertEqual(msgs[0]["error"]["code"], -32602)
                msgs, _ = call("initialize", {"protocolVersion": "2025-11-25"})
                self.assertEqual(msgs[0]["error"]["code"], -32600)
                with self.assertRaises(grpc.RpcError) as cm:
                    call("ping", session="not-a-session")
                self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)

                post = lambda session, msg: unary(gw, "/mcphub.v1.Gateway/Post", gateway_pb2.ClientMessage(
                    session_id=session, message_json=json.dumps(msg)), gateway_pb2.ClientMessageReply)
                post(sid, {"jsonrpc": "2.0", "method": "notifications/initialized"})
                with self.assertRaises(grpc.RpcError) as cm:
                    post(sid, {"jsonrpc": "2.0", "id": 1, "method": "ping"})
                self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

                attach = lambda **kw: unary(gw, "/mcphub.v1.Gateway/AttachStream",
                                            gateway_pb2.AttachStreamRequest(session_id=sid, **kw),
                                            gateway_pb2.AttachStreamReply)
                attach(edge_id="py-edge", stream_id="get-1")
                with self.assertRaises(grpc.RpcError) as cm:
                    attach(edge_id="py-edge", stream_id="get-2")
                self.assertEqual(cm.exception.code(), grpc.StatusCode.ALREADY_EXISTS)
                # Resuming a POST stream replays what it carried after the given id.
                replay = attach(edge_id="py-edge", stream_id="get-3", last_event_id="post-1/0")
                self.assertEqual(len(replay.replay), 3)
                self.assertTrue(all(m.stream_id == "post-1" for m in replay.replay))
                unary(gw, "/mcphub.v1.Gateway/DetachStream",
                      gateway_pb2.DetachStreamRequest(edge_id="py-edge", session_id=sid, stream_id="get-3"),
                      gateway_pb2.DetachStreamReply)
                attach(edge_id="py-edge", stream_id="get-4")

                # Legacy SSE: the session opens with the stream, initialize arrives by Post and
                # its answer travels to the edge holding the /sse stream.
                legacy = unary(gw, "/mcphub.v1.Gateway/OpenSession",
                               gateway_pb2.OpenSessionRequest(era=gateway_pb2.PROTOCOL_ERA_LEGACY_SSE),
                               gateway_pb2.OpenSessionReply)
                unary(gw, "/mcphub.v1.Gateway/AttachStream",
                      gateway_pb2.AttachStreamRequest(session_id=legacy.session_id, edge_id="py-edge",
                                                      stream_id="sse-1"),
                      gateway_pb2.AttachStreamReply)
                post(legacy.session_id, json.loads(initialize_json("2024-11-05", 42)))
                ev = edge.wait(lambda ev: ev.HasField("stream_message")
                               and ev.stream_message.session_id == legacy.session_id)
                answer = json.loads(ev.stream_message.message_json)
                self.assertEqual(answer["id"], 42)
                self.assertEqual(answer["result"]["protocolVersion"], "2024-11-05")
                self.assertEqual(ev.stream_message.stream_id, "sse-1")
                # Its stream closing ends it, with the broadcast.
                unary(gw, "/mcphub.v1.Gateway/DetachStream",
                      gateway_pb2.DetachStreamRequest(edge_id="py-edge", session_id=legacy.session_id,
                                                      stream_id="sse-1"),
                      gateway_pb2.DetachStreamReply)
                ev = edge.wait(lambda ev: ev.HasField("session_ended")
                               and ev.session_ended.session_id == legacy.session_id)
                self.assertEqual(ev.session_ended.reason, gateway_pb2.END_REASON_STREAM_CLOSED)
        finally:
            self.assertEqual(ctl.stop(), 0, ctl.log())

    def test_idle_sessions_end(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "mcp_settings.json")
            with open(path, "w") as f:
                json.dump({"mcpServers": {}, "hub": {"sessionIdleTimeout": 1000}}, f)
            ctl = hub.start_control(["--config", path])
            try:
                with grpc.insecure_channel(f"127.0.0.1:{ctl.gateway_port}") as gw:
                    edge = Subscriber(gw, "py-edge")
                    edge.wait(lambda ev: ev.HasField("hello"))
                    open_ = lambda: unary(gw, "/mcphub.v1.Gateway/OpenSession",
                                          gateway_pb2.OpenSessionRequest(initialize_json=initialize_json()),
                                          gateway_pb2.OpenSessionReply).session_id
                    idle, streaming = open_(), open_()
                    unary(gw, "/mcphub.v1.Gateway/AttachStream",
                          gateway_pb2.AttachStreamRequest(session_id=streaming, edge_id="py-edge",
                                                          stream_id="get-1"),
                          gateway_pb2.AttachStreamReply)
                    t0 = time.monotonic()
                    ev = edge.wait(lambda ev: ev.HasField("session_ended"), timeout=5)
                    self.assertEqual(ev.session_ended.session_id, idle)
                    self.assertEqual(ev.session_ended.reason, gateway_pb2.END_REASON_IDLE_TIMEOUT)
                    self.assertGreaterEqual(time.monotonic() - t0, 0.8)
                    # A session with an open stream is not idle; once the stream is gone it is.
                    time.sleep(0.5)
                    self.assertFalse(any(e.HasField("session_ended") and e.session_ended.session_id == streaming
                                         for e in edge.events))
                    unary(gw, "/mcphub.v1.Gateway/DetachStream",
                          gateway_pb2.DetachStreamRequest(session_id=streaming, edge_id="py-edge",
                                                          stream_id="get-1"),
                          gateway_pb2.DetachStreamReply)
                    edge.wait(lambda ev: ev.HasField("session_ended")
                              and ev.session_ended.session_id == streaming, timeout=5)
            finally:
                self.assertEqual(ctl.stop(), 0, ctl.log())

    def test_invalid_settings_file_is_reported_with_position(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "bad.json")
            with open(path, "w") as f:
                f.write('{\n  "mcpServers": {\n    "x": {"command": "echo", "args": "oops"}\n  }\n}\n')
            ctl = hub.Daemon("mcphub-control", ["--config", path, "--listen", "127.0.0.1:0",
                                                "--admin-listen", "127.0.0.1:0"])
            self.assertEqual(ctl.proc.wait(10), 1)
            ctl.stop()
            line = ctl.wait_line(r'msg="invalid configuration"').string
            self.assertIn("bad.json:3:", line)
            self.assertIn("mcpServers.x.args", line)

            ctl = hub.Daemon("mcphub-control", ["--config", os.path.join(d, "missing.json")])
            self.assertEqual(ctl.proc.wait(10), 1)
            ctl.stop()
            self.assertIn("missing.json", ctl.wait_line(r'msg="invalid configuration"').string)

    def test_bad_flags(self):
        for args in (["--bogus"], ["--drain-ms", "x"], ["extra"]):
            d = hub.Daemon("mcphub-control", args)
            self.assertEqual(d.proc.wait(10), 1, args)
            d.stop()
        d = hub.Daemon("mcphub-control", ["--help"])
        self.assertEqual(d.proc.wait(10), 0)
        d.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
