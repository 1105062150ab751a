"""Prometheus metrics of mcphub-edge (GET /metrics on its own listener) and mcphub-control
(--metrics-listen): a scripted workload through the edge, then every counter it moved is
checked exactly on both daemons, and both expositions are parsed strictly (every sample in a
declared family, label syntax and escapes, no duplicate series, cumulative histograms ending
with +Inf == _count)."""

import json
import math
import os
import re
import signal
import socket
import tempfile
import time
import unittest

import grpc

import hub
from hub import post_headers, request
from pb import admin_pb2
from test_control_grpc import unary

N_SESSIONS = 5
M_CALLS = 7
DELETED = 2  # sessions deleted; the first of them holds a GET stream when it goes
ROUTE = "/mcp/fx"
WEIRD = 'we"ird\\name'  # a disabled server whose name needs escaping in label values

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="')
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


class Exposition:
    """A text exposition (format 0.0.4) parsed strictly; raises AssertionError on anything
    a Prometheus server would refuse or that breaks the format's rules."""

    def __init__(self, text):
        self.families = {}  # name -> {"type", "help", "series": {labels frozenset: value}}
        self.series = {}    # (sample name, frozenset of labels) -> value
        if not text.endswith("\n"):
            raise AssertionError("exposition does not end with a newline")
        current = None
        for n, line in enumerate(text[:-1].split("\n"), 1):
            where = f"line {n}: {line!r}"
            if not line:
                raise AssertionError(f"{where}: empty line")
            if line.startswith("#"):
                current = self._meta(line, where, current)
                continue
            self._sample(line, where, current)
        for name, fam in self.families.items():
            if "type" not in fam or "help" not in fam:
                raise AssertionError(f"family {name} lacks HELP or TYPE")
            if fam["type"] == "histogram":
                self._check_histogram(name)

    def _meta(self, line, where, current):
        parts = line.split(" ", 3)
        if len(parts) < 3 or parts[1] not in ("HELP", "TYPE"):
            raise AssertionError(f"{where}: not a HELP or TYPE line")
        kind, name = parts[1], parts[2]
        if not METRIC_NAME.fullmatch(name):
            raise AssertionError(f"{where}: bad metric name")
        fam = self.families.setdefault(name, {"series": {}})
        if fam["series"]:
            raise AssertionError(f"{where}: {kind} after the family's samples")
        if kind.lower() in fam:
            raise AssertionError(f"{where}: second {kind} for {name}")
        text = parts[3] if len(parts) == 4 else ""
        if kind == "HELP":
            i = 0
            while i < len(text):  # only \\ and \n are escapes in HELP
                if text[i] == "\\":
                    if text[i + 1:i + 2] not in ("\\", "n"):
                        raise AssertionError(f"{where}: bad escape in HELP")
                    i += 1
                i += 1
            fam["help"] = text
        else:
            if text not in TYPES:
                raise AssertionError(f"{where}: unknown type {text!r}")
            fam["type"] = text
        return name

    @staticmethod
    def _labels(line, pos, where):
        labels = {}
        pos += 1
        if line[pos] == "}":
            return labels, pos + 1
        while True:
            m = LABEL.match(line, pos)
            if not m:
                raise AssertionError(f"{where}: bad label at {pos}")
            name, pos = m.group(1), m.end()
            value = []
            while True:
                if pos >= len(line):
                    raise AssertionError(f"{where}: unterminated label value")
                ch = line[pos]
                if ch == '"':
                    pos += 1
                    break
                if ch == "\\":
                    esc = line[pos + 1:pos + 2]
                    if esc not in ('\\', '"', "n"):
                        raise AssertionError(f"{where}: bad escape \\{esc}")
                    value.append("\n" if esc == "n" else esc)
                    pos += 2
                    continue
                value.append(ch)
                pos += 1
            if name in labels:
                raise AssertionError(f"{where}: label {name} twice")
            labels[name] = "".join(value)
            if line[pos:pos + 1] == ",":
                pos += 1
                continue
            if line[pos:pos + 1] == "}":
                return labels, pos + 1
            raise AssertionError(f"{where}: expected , or }} at {pos}")

    @staticmethod
    def _value(text, where):
        if text in ("+Inf", "-Inf", "NaN"):
            return {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}[text]
        if not NUMBER.fullmatch(text):
            raise AssertionError(f"{where}: bad value {text!r}")
        return float(text)

    def _sample(self, line, where, current):
        m = METRIC_NAME.match(line)
        if not m:
            raise AssertionError(f"{where}: bad sample name")
        name, pos = m.group(0), m.end()
        labels = {}
        if line[pos:pos + 1] == "{":
            labels, pos = self._labels(line, pos, where)
        if line[pos:pos + 1] != " ":
            raise AssertionError(f"{where}: no space before the value")
        rest = line[pos + 1:]
        if " " in rest:
            raise AssertionError(f"{where}: timestamps are not expected")
        value = self._value(rest, where)
        # The sample belongs to the family declared last (families are contiguous).
        fam = self.families.get(current)
        if fam is None or "type" not in fam:
            raise AssertionError(f"{where}: sample outside a declared family")
        suffix = name[len(current):] if name.startswith(current) else None
        allowed = ("_bucket", "_sum", "_count") if fam["type"] == "histogram" else ("",)
        if suffix not in allowed:
            raise AssertionError(f"{where}: {name} is not a sample of family {current}")
        if ("le" in labels) != (suffix == "_bucket"):
            raise AssertionError(f"{where}: le label only (and always) on _bucket")
        if fam["type"] in ("counter", "histogram") and not 0 <= value < math.inf:
            raise AssertionError(f"{where}: counts must be finite and >= 0")
        key = (name, frozenset(labels.items()))
        if key in self.series:
            raise AssertionError(f"{where}: duplicate series")
        self.series[key] = value
        fam["series"][key] = value

    def _check_histogram(self, name):
        groups = {}
        for (sname, labels), value in self.families[name]["series"].items():
            rest = frozenset((k, v) for k, v in labels if k != "le")
            g = groups.setdefault(rest, {"buckets": []})
            if sname.endswith("_bucket"):
                g["buckets"].append((self._value(dict(labels)["le"], name), value))
            else:
                g[sname[len(name):]] = value
        for rest, g in groups.items():
            what = f"{name}{dict(rest)}"
            if "_sum" not in g or "_count" not in g or not g["buckets"]:
                raise AssertionError(f"{what}: histogram without buckets, _sum or _count")
            les = [le for le, _ in g["buckets"]]
            counts = [c for _, c in g["buckets"]]
            # Series keep the exposition's order (dicts are ordered): buckets as written.
            if les != sorted(les) or len(set(les)) != len(les):
                raise AssertionError(f"{what}: le bounds not strictly increasing: {les}")
            if les[-1] != math.inf:
                raise AssertionError(f"{what}: last bucket is not +Inf")
            if any(b < a for a, b in zip(counts, counts[1:])):
                raise AssertionError(f"{what}: buckets not cumulative: {counts}")
            if counts[-1] != g["_count"]:
                raise AssertionError(f"{what}: +Inf {counts[-1]} != _count {g['_count']}")
            if any(c != int(c) for c in counts):
                raise AssertionError(f"{what}: fractional bucket count")

    def get(self, name, **labels):
        """The value of one series; 0 when it is absent (counters not moved yet)."""
        return self.series.get((name, frozenset(labels.items())), 0)

    def has(self, name, **labels):
        return (name, frozenset(labels.items())) in self.series

    def total(self, name):
        return sum(v for (n, _), v in self.series.items() if n == name)

    def type_of(self, name):
        return self.families[name]["type"]


def scrape(port):
    status, headers, body = hub.http_get(port, "/metrics", timeout=5)
    if status != 200:
        raise AssertionError(f"/metrics answered {status}: {body}")
    if headers.get("content-type") != "text/plain; version=0.0.4; charset=utf-8":
        raise AssertionError(f"content-type {headers.get('content-type')}")
    return Exposition(body)


def settle(test, port, expected, timeout=5.0):
    """Scrapes until every (name, labels) in expected has its value (some counters move
    just after the client got its answer), then asserts them all. Returns the last scrape."""
    deadline = time.monotonic() + timeout
    while True:
        exp = scrape(port)
        got = {k: exp.get(k[0], **dict(k[1])) for k in expected}
        if got == expected:
            return exp
        if time.monotonic() > deadline:
            wrong = {f"{n}{dict(l)}": f"got {got[(n, l)]:g}, want {want}"
                     for (n, l), want in expected.items() if got[(n, l)] != want}
            test.fail("metrics off:\n" + "\n".join(f"  {k}: {v}" for k, v in wrong.items()))
        time.sleep(0.05)


def key(name, **labels):
    return (name, tuple(sorted(labels.items())))


class MetricsTest(unittest.TestCase):
    def setUp(self):
        fixture = os.path.join(hub.BIN_DIR, "mcphub-fixture")
        settings = {"mcpServers": {"fx": {"command": fixture, "args": ["--name", "fx"]},
                                   WEIRD: {"command": fixture, "enabled": False}}}
        self.settings = settings
        self.dir = tempfile.TemporaryDirectory()
        self.path = path = os.path.join(self.dir.name, "mcp_settings.json")
        self.write_settings(json.dumps(settings))
        self.ctl = hub.start_control(["--config", path, "--metrics-listen", "127.0.0.1:0"])
        self.mport = int(self.ctl.wait_line(
            r'msg="listening" service=metrics addr=127\.0\.0\.1:(\d+)').group(1))
        self.edge = hub.start_edge(self.ctl.gateway_port, edge_id="edge-metrics")
        hub.wait_status(self.edge.port, "/readyz", 200, timeout=10)
        self.next_id = 100

    def write_settings(self, text):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.path)

    def tearDown(self):
        try:
            self.assertEqual(self.edge.stop(signal.SIGTERM), 0, self.edge.log())
            self.assertEqual(self.ctl.stop(signal.SIGTERM), 0, self.ctl.log())
        finally:
            self.dir.cleanup()
            hub.assert_no_children()

    # ---- MCP over the edge ----

    def post(self, body, session=None, headers=None):
        h = post_headers(session)
        h.update(headers or {})
        return request(self.edge.port, "POST", ROUTE, body, h)

    def initialize(self):
        status, h, body, _ = self.post(hub.INIT)
        self.assertEqual(status, 200, body)
        sid = h["mcp-session-id"]
        status, _, _, _ = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"},
                                    sid)
        self.assertEqual(status, 202)
        return sid

    def call_echo(self, sid, text):
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call",
               "params": {"name": "echo", "arguments": {"message": text}}}
        return self.post(msg, sid)

    def delete(self, sid):
        h = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
        return request(self.edge.port, "DELETE", ROUTE, headers=h)[0]

    def wait_stream_end(self, sock):
        """Reads until the edge ends the stream (its last chunk; the connection stays)."""
        sock.settimeout(10)
        tail = b""
        while not tail.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(4096)
            self.assertTrue(chunk, "connection closed before the stream's last chunk")
            tail = (tail + chunk)[-64:]

    def legacy_session_ended_by_admin(self):
        """A 2024-11-05 session: GET /sse, initialize through POST /messages (202, answered
        on the stream), then ended by Admin.EndSession, which closes its stream."""
        sock, data = hub.open_stream(self.edge.port, "/sse/fx", {}, until=b"sessionId=")
        while b"\n\n" not in data.split(b"event: endpoint", 1)[1]:
            data += sock.recv(4096)
        uri = re.search(rb"data: (/messages\?sessionId=[^\r\n]+)", data).group(1).decode()
        sid = uri.split("=", 1)[1]
        try:
            status = request(self.edge.port, "POST", uri, hub.INIT,
                             {"Content-Type": "application/json"})[0]
            self.assertEqual(status, 202)
            self.assertEqual(scrape(self.edge.port).get("mcphub_edge_sse_streams",
                                                        kind="legacy"), 1)
            with grpc.insecure_channel(f"127.0.0.1:{self.ctl.admin_port}") as ch:
                reply = unary(ch, "/mcphub.v1.Admin/EndSession",
                              admin_pb2.AdminEndSessionRequest(session_id=sid),
                              admin_pb2.AdminEndSessionReply)
            self.assertTrue(reply.existed)
            self.wait_stream_end(sock)
        finally:
            sock.close()

    # ---- the test ----

    def test_workload_counted_exactly(self):
        before = scrape(self.edge.port)
        self.assertEqual(before.total("mcphub_edge_requests_total"), 0)
        self.assertEqual(before.get("mcphub_edge_control_connected"), 1)
        self.assertEqual(before.get("mcphub_edge_info", edge_id="edge-metrics"), 1)

        sessions = [self.initialize() for _ in range(N_SESSIONS)]
        for i in range(M_CALLS):
            status, _, body, _ = self.call_echo(sessions[i % N_SESSIONS], f"hello {i}")
            self.assertEqual(status, 200, body)
            self.assertEqual(body["result"]["content"][0]["text"], f"hello {i}")

        # A call answered as an event stream (progress comes first): a POST stream.
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call",
               "params": {"name": "slow", "arguments": {"steps": 2, "delayMs": 10},
                          "_meta": {"progressToken": "p1"}}}
        status, headers, _, raw = self.post(msg, sessions[1])
        self.assertEqual((status, headers["content-type"]), (200, "text/event-stream"))
        self.assertIn(b"done after 2 steps", raw)

        # Refused requests: on their head (406, 405), on their body (400), by control (404).
        status = self.post(hub.INIT, headers={"Accept": "application/json"})[0]
        self.assertEqual(status, 406)
        self.assertEqual(request(self.edge.port, "PUT", ROUTE, {}, post_headers())[0], 405)
        status = request(self.edge.port, "POST", ROUTE, raw=b"{not json",
                         headers=post_headers(sessions[0]))[0]
        self.assertEqual(status, 400)
        self.assertEqual(self.call_echo("no-such-session", "x")[0], 404)

        # A GET stream on the first session to be deleted: its DELETE closes it.
        stream, _ = hub.open_stream(self.edge.port, ROUTE, {"Mcp-Session-Id": sessions[0],
                                             "MCP-Protocol-Version": "2025-11-25"})
        try:
            open_now = scrape(self.edge.port)
            self.assertEqual(open_now.get("mcphub_edge_sse_streams", kind="get"), 1)
            for sid in sessions[:DELETED]:
                self.assertEqual(self.delete(sid), 200)
            self.assertEqual(self.delete(sessions[0]), 404)
            self.wait_stream_end(stream)
        finally:
            stream.close()
        self.legacy_session_ended_by_admin()

        # ---- the edge ----
        req = "mcphub_edge_requests_total"
        streamable = {"transport": "streamable"}
        expected = {
            key(req, method="initialize", status="200", **streamable): N_SESSIONS,
            key(req, method="notifications/initialized", status="202", **streamable): N_SESSIONS,
            key(req, method="tools/call", status="200", **streamable): M_CALLS + 1,
            key(req, method="tools/call", status="404", **streamable): 1,
            key(req, method="unknown", status="406", **streamable): 1,
            key(req, method="unknown", status="405", **streamable): 1,
            key(req, method="unknown", status="400", **streamable): 1,
            key(req, method="stream", status="200", **streamable): 1,
            key(req, method="delete", status="200", **streamable): DELETED,
            key(req, method="delete", status="404", **streamable): 1,
            key(req, method="stream", transport="sse", status="200"): 1,
            key(req, method="initialize", transport="sse", status="202"): 1,
            key("mcphub_edge_request_duration_seconds_count", method="tools/call"): M_CALLS + 2,
            key("mcphub_edge_request_duration_seconds_count", method="initialize"):
                N_SESSIONS + 1,
            key("mcphub_edge_request_duration_seconds_count", method="delete"): DELETED + 1,
            key("mcphub_edge_request_duration_seconds_count", method="stream"): 0,
            key("mcphub_edge_sse_streams", kind="get"): 0,
            key("mcphub_edge_sse_streams", kind="post"): 0,
            key("mcphub_edge_sse_streams", kind="legacy"): 0,
            key("mcphub_edge_sse_streams_closed_total", kind="get",
                reason="session_ended"): 1,
            key("mcphub_edge_sse_streams_closed_total", kind="legacy",
                reason="session_ended"): 1,
            key("mcphub_edge_sse_streams_closed_total", kind="post", reason="completed"): 1,
            key("mcphub_edge_control_calls_total", method="OpenSession", code="OK"):
                N_SESSIONS + 1,
            key("mcphub_edge_control_calls_total", method="Post", code="OK"): N_SESSIONS + 1,
            key("mcphub_edge_control_calls_total", method="Request", code="OK"): M_CALLS + 1,
            key("mcphub_edge_control_calls_total", method="Request", code="NOT_FOUND"): 1,
            key("mcphub_edge_control_calls_total", method="AttachStream", code="OK"): 2,
            key("mcphub_edge_control_calls_total", method="EndSession", code="OK"): DELETED + 1,
            key("mcphub_edge_sessions_ended_total", reason="client_delete"): DELETED,
            key("mcphub_edge_sessions_ended_total", reason="admin"): 1,
            key("mcphub_edge_control_connected"): 1,
            key("mcphub_edge_control_lost_total"): 0,
        }
        edge = settle(self, self.edge.port, expected)
        # Nothing else was counted.
        self.assertEqual(edge.total(req),
                         2 * N_SESSIONS + M_CALLS + 1 + 1 + 3 + 1 + DELETED + 1 + 2)
        self.assertEqual(edge.total("mcphub_edge_control_calls_total"),
                         2 * (N_SESSIONS + 1) + M_CALLS + 1 + 1 + 2 + DELETED + 1)
        self.assertEqual(edge.total("mcphub_edge_sse_streams_closed_total"), 3)
        self.assertEqual(edge.type_of(req), "counter")
        self.assertEqual(edge.type_of("mcphub_edge_request_duration_seconds"), "histogram")
        self.assertEqual(edge.type_of("mcphub_edge_sse_streams"), "gauge")
        self.check_process(edge)

        # ---- control ----
        gw = {"listener": "gateway", "grpc_service": "mcphub.v1.Gateway"}
        handled = "mcphub_control_rpc_handled_total"
        expected = {
            key("mcphub_control_sessions"): N_SESSIONS - DELETED,
            key("mcphub_control_sessions_opened_total", era="streamable"): N_SESSIONS,
            key("mcphub_control_sessions_opened_total", era="legacy_sse"): 1,
            key("mcphub_control_sessions_opened_total", era="stateless"): 0,
            key("mcphub_control_sessions_ended_total", reason="client_delete"): DELETED,
            key("mcphub_control_sessions_ended_total", reason="admin"): 1,
            key("mcphub_control_sessions_ended_total", reason="idle_timeout"): 0,
            key("mcphub_control_edges"): 1,
            key("mcphub_control_broadcasts_total"): DELETED + 1,
            key("mcphub_control_broadcast_lag_seconds_count"): DELETED + 1,
            key("mcphub_control_requests_in_flight"): 0,
            key("mcphub_control_instances", server="fx", kind="shared", state="ready"): 1,
            key("mcphub_control_instance_restarts_total", server="fx"): 0,
            key("mcphub_control_instance_restarts_total", server=WEIRD): 0,
            key(handled, grpc_method="OpenSession", grpc_code="OK", **gw): N_SESSIONS + 1,
            key(handled, grpc_method="Post", grpc_code="OK", **gw): N_SESSIONS + 1,
            key(handled, grpc_method="Request", grpc_code="OK", **gw): M_CALLS + 1,
            key(handled, grpc_method="Request", grpc_code="NOT_FOUND", **gw): 1,
            key(handled, grpc_method="AttachStream", grpc_code="OK", **gw): 2,
            key(handled, grpc_method="EndSession", grpc_code="OK", **gw): DELETED + 1,
            key(handled, listener="admin", grpc_service="mcphub.v1.Admin",
                grpc_method="EndSession", grpc_code="OK"): 1,
            key("mcphub_control_config_version"): 1,
            key("mcphub_control_config_reloads_total"): 0,
            key("mcphub_control_config_reload_failures_total"): 0,
        }
        ctl = settle(self, self.mport, expected)
        self.assertEqual(ctl.total(handled),
                         2 * (N_SESSIONS + 1) + M_CALLS + 1 + 1 + 2 + DELETED + 1 + 1)
        self.assertEqual(ctl.total("mcphub_control_instances"), 1)  # the weird one is disabled
        # Its name came back through label escaping intact.
        self.assertTrue(ctl.has("mcphub_control_instance_restarts_total", server=WEIRD))
        self.assertEqual(ctl.type_of("mcphub_control_broadcast_lag_seconds"), "histogram")
        self.assertEqual(ctl.total("mcphub_control_sessions_ended_total"), DELETED + 1)
        self.check_process(ctl)

        # A refused reload, then an applied one.
        self.write_settings("{ not json")
        settle(self, self.mport, {key("mcphub_control_config_reload_failures_total"): 1,
                                  key("mcphub_control_config_reloads_total"): 0,
                                  key("mcphub_control_config_version"): 1})
        self.settings["groups"] = [{"name": "g", "servers": ["fx"]}]
        self.write_settings(json.dumps(self.settings))
        settle(self, self.mport, {key("mcphub_control_config_reload_failures_total"): 1,
                                  key("mcphub_control_config_reloads_total"): 1,
                                  key("mcphub_control_config_version"): 2})

        # The listener's other answers.
        status, _, body = hub.http_get(self.mport, "/healthz")
        self.assertEqual((status, json.loads(body)), (200, {"status": "ok"}))
        status, headers, _, _ = request(self.mport, "POST", "/metrics", {})
        self.assertEqual((status, headers.get("allow")), (405, "GET, HEAD"))
        self.assertEqual(hub.http_get(self.mport, "/nope")[0], 404)
        # The edge's /metrics is outside the MCP rules: other methods get 405 there too.
        status, headers, _, _ = request(self.edge.port, "POST", "/metrics", {})
        self.assertEqual((status, headers.get("allow")), (405, "GET, HEAD"))

    def test_streams_whose_client_hangs_up_end_promptly(self):
        """A client that closes its GET stream or its legacy /sse stream while nothing is
        being sent: the edge notices within its ticker period (one second here, with the
        default 15 s heartbeat), not at the next heartbeat, and a legacy session ends with
        its stream."""
        sid = self.initialize()
        get, _ = hub.open_stream(self.edge.port, ROUTE, {"Mcp-Session-Id": sid,
                                                         "MCP-Protocol-Version": "2025-11-25"})
        legacy, data = hub.open_stream(self.edge.port, "/sse/fx", {}, until=b"sessionId=")
        while b"\n\n" not in data.split(b"event: endpoint", 1)[1]:
            data += legacy.recv(4096)
        uri = re.search(rb"data: (/messages\?sessionId=[^\r\n]+)", data).group(1).decode()
        self.assertEqual(request(self.edge.port, "POST", uri, hub.INIT,
                                 {"Content-Type": "application/json"})[0], 202)
        hub.read_until(legacy, b'"id":1')
        settle(self, self.edge.port, {key("mcphub_edge_sse_streams", kind="get"): 1,
                                      key("mcphub_edge_sse_streams", kind="legacy"): 1})
        self.assertEqual(scrape(self.mport).get("mcphub_control_sessions"), 2)
        t0 = time.monotonic()
        get.close()
        legacy.close()
        settle(self, self.edge.port, {
            key("mcphub_edge_sse_streams", kind="get"): 0,
            key("mcphub_edge_sse_streams", kind="legacy"): 0,
            key("mcphub_edge_sse_streams_closed_total", kind="get", reason="client_closed"): 1,
            key("mcphub_edge_sse_streams_closed_total", kind="legacy", reason="client_closed"): 1,
        }, timeout=5)
        took = time.monotonic() - t0
        hub.wait_for(lambda: scrape(self.mport).get("mcphub_control_sessions") == 1, timeout=5,
                     what="the legacy session to end with its stream")
        print(f"\n  streams whose client hung up closed {took * 1000:.0f} ms later; "
              f"legacy session ended by {(time.monotonic() - t0) * 1000:.0f} ms")
        # The Streamable HTTP session outlives its stream and takes calls.
        self.assertEqual(self.call_echo(sid, "still here")[0], 200)

    def test_metrics_port_in_use(self):
        # A listener that cannot bind stops control at start, cleanly, like the gRPC ones.
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            d = hub.Daemon("mcphub-control", ["--listen", "127.0.0.1:0", "--admin-listen",
                                              "127.0.0.1:0", "--metrics-listen",
                                              f"127.0.0.1:{busy.getsockname()[1]}"])
            self.assertEqual(d.proc.wait(10), 1, d.log())
            d.stop()
        self.assertIn('msg="cannot listen" service=metrics', d.log())

    def check_process(self, exp):
        self.assertGreater(exp.get("process_resident_memory_bytes"), 1 << 20)
        self.assertGreater(exp.get("process_open_fds"), 2)
        self.assertGreater(exp.get("process_max_fds"), exp.get("process_open_fds"))
        start = exp.get("process_start_time_seconds")
        self.assertLess(abs(time.time() - start), 600, start)
        self.assertEqual(exp.type_of("process_cpu_seconds_total"), "counter")


class ExpositionParserTest(unittest.TestCase):
    """The strict parser itself refuses what it must (so that passing means something)."""

    GOOD = ("# HELP h_seconds x\n# TYPE h_seconds histogram\n"
            'h_seconds_bucket{le="1"} 1\nh_seconds_bucket{le="+Inf"} 2\n'
            "h_seconds_sum 3\nh_seconds_count 2\n"
            '# HELP c_total y \\\\ \\n\n# TYPE c_total counter\nc_total{a="q\\"\\\\\\n"} 1\n')

    def test_good(self):
        exp = Exposition(self.GOOD)
        self.assertEqual(exp.get("c_total", a='q"\\\n'), 1)
        self.assertEqual(exp.get("h_seconds_count"), 2)

    def test_refused(self):
        bad = [
            self.GOOD.replace('le="+Inf"} 2', 'le="+Inf"} 3'),    # +Inf != _count
            self.GOOD.replace('le="1"} 1', 'le="1"} 5'),          # not cumulative
            self.GOOD.replace('{le="+Inf"}', '{le="2"}'),         # no +Inf bucket
            self.GOOD.replace("c_total{", "d_total{"),            # undeclared family
            self.GOOD.replace('a="q', 'a="\\q'),                   # bad escape
            self.GOOD + "c_total 1\nc_total 1\n",                  # duplicate / outside family
            self.GOOD.replace("# TYPE c_total counter\n", ""),    # no TYPE
            self.GOOD.replace("h_seconds_sum 3\n", ""),           # no _sum
            self.GOOD[:-1],                                        # no final newline
            self.GOOD.replace("c_total{a", "c_total{a=\"x\",a"),  # label twice
        ]
        for text in bad:
            with self.assertRaises(AssertionError, msg=text):
                Exposition(text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
