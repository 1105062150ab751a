"""mcphubctl against a running control: every command, its output (tables and --json), its
exit codes (0 done, 1 refused, 2 usage, 3 unreachable, 4 bad token), the settings file it
rewrites, and what a connected MCP client sees when a server is added (list_changed and the
new tools) or removed (its process stops). Also Admin through python3-grpcio with the
checked-in .proto files and the token in metadata."""

import http.client
import json
import os
import subprocess
import tempfile
import threading
import unittest

import grpc

import hub
from hub import INIT, post_headers, request, wait_for
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from pb import admin_pb2, reflection_pb2, reflection_v1_pb2

TOKEN = "ctl-test-token"


def fixture(name):
    return {"command": hub.binary("mcphub-fixture"), "args": ["--name", name]}


class Stream:
    """A GET stream on the edge, read on a thread; events collects parsed messages."""

    def __init__(self, port, session):
        self.events = []
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.conn.request("GET", "/mcp", headers={"Accept": "text/event-stream",
                                                  "Mcp-Session-Id": session,
                                                  "MCP-Protocol-Version": "2025-11-25"})
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, self.resp.status
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        data = []
        try:
            for raw in self.resp:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:])
                elif not line and data:
                    text = "\n".join(data).strip()
                    if text:  # an empty data field only primes the stream with an id
                        self.events.append(json.loads(text))
                    data = []
        except (OSError, ValueError, AttributeError):  # AttributeError: closed under us
            pass

    def close(self):
        self.conn.close()


class McphubctlTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.settings = os.path.join(self.dir.name, "mcp_settings.json")
        with open(self.settings, "w") as f:
            json.dump({"mcpServers": {"alpha": fixture("alpha")}, "someUnknownKey": {"kept": True}}, f)
        self.token_file = os.path.join(self.dir.name, "admin-token")
        with open(self.token_file, "w") as f:
            f.write(TOKEN + "\n")
        self.ctl = hub.start_control(["--config", self.settings, "--admin-token-file", self.token_file])
        self.edge = hub.start_edge(self.ctl.gateway_port, edge_id="edge-ctl")
        hub.wait_status(self.edge.port, "/readyz", 200, timeout=10)

    def tearDown(self):
        codes = self.edge.stop(), self.ctl.stop()
        self.assertEqual(codes, (0, 0), self.edge.log() + self.ctl.log())
        hub.assert_no_children()
        self.dir.cleanup()

    def ctl_run(self, *args, token=TOKEN, addr=None, stdin=None):
        cmd = [hub.binary("mcphubctl"), "--control", addr or f"127.0.0.1:{self.ctl.admin_port}",
               "--timeout", "5000"]
        if token:
            cmd += ["--token", token]
        r = subprocess.run(cmd + list(args), capture_output=True, text=True, input=stdin, timeout=30)
        return r.returncode, r.stdout, r.stderr

    def ok(self, *args, **kw):
        rc, out, err = self.ctl_run(*args, **kw)
        self.assertEqual(rc, 0, f"mcphubctl {' '.join(args)}: {err}")
        return out

    def js(self, *args):
        return json.loads(self.ok("--json", *args))

    def file(self):
        with open(self.settings) as f:
            return json.load(f)

    def test_every_command(self):
        # Read-only ones, as tables and as JSON.
        self.assertIn("alpha", self.ok("servers", "list"))
        self.assertEqual(self.js("servers", "list")["servers"][0]["name"], "alpha")
        self.assertEqual(self.js("stats")["servers"], 1)
        got = self.js("servers", "get", "alpha")
        self.assertEqual(json.loads(got["settingsJson"])["args"], ["--name", "alpha"])
        inst = self.js("instances", "list")["instances"]
        self.assertEqual([i["server"] for i in inst], ["alpha"])
        self.assertGreater(inst[0]["pid"], 0)
        self.assertEqual(self.js("sessions", "list")["sessions"], [])
        self.assertEqual(self.js("groups", "list")["groups"], [])
        self.assertEqual(self.js("keys", "list")["keys"], [])

        # Servers: add (from stdin), disable, enable, restart, remove.
        rc, out, err = self.ctl_run("servers", "add", "beta", "-", stdin=json.dumps(fixture("beta")))
        self.assertEqual(rc, 0, err)
        self.assertIn("created: true", out)
        self.assertEqual(self.file()["mcpServers"]["beta"]["args"], ["--name", "beta"])
        self.assertEqual(self.file()["someUnknownKey"], {"kept": True}, "unknown keys survive")
        beta = wait_for(lambda: [i for i in self.js("instances", "list", "--server", "beta")["instances"]
                                 if i["state"] == "ready"], what="beta ready")[0]
        self.assertIn("changed: true", self.ok("servers", "disable", "beta"))
        self.assertIs(self.file()["mcpServers"]["beta"]["enabled"], False)
        wait_for(lambda: not os.path.exists(f"/proc/{beta['pid']}"), what="beta's process to stop")
        self.assertIn("changed: false", self.ok("servers", "disable", "beta"))
        self.ok("servers", "enable", "beta")
        beta = wait_for(lambda: [i for i in self.js("instances", "list", "--server", "beta")["instances"]
                                 if i["state"] == "ready"], what="beta back")[0]
        self.assertIn("changed: true", self.ok("servers", "restart", "beta"))
        wait_for(lambda: [i for i in self.js("instances", "list", "--server", "beta")["instances"]
                          if i["state"] == "ready" and i["pid"] != beta["pid"] and i["restarts"] == 1],
                 what="beta restarted")
        self.ok("instances", "restart", "beta")
        self.ok("servers", "remove", "beta")
        self.assertNotIn("beta", self.file()["mcpServers"])

        # Groups and keys.
        self.assertIn("created: true", self.ok("groups", "add", '{"name": "g1", "servers": ["alpha"]}'))
        self.assertEqual(self.js("groups", "list")["groups"][0]["servers"], ["alpha"])
        tok = self.js("keys", "add", "alice", "--access", "servers", "--servers", "alpha")["token"]
        self.assertGreaterEqual(len(tok), 40)
        keys = self.js("keys", "list")["keys"]
        self.assertEqual((keys[0]["name"], keys[0]["accessType"], keys[0]["allowedServers"]),
                         ("alice", "servers", ["alpha"]))
        self.assertNotIn(tok, self.ok("keys", "list"), "tokens are never listed")
        self.assertEqual(self.js("keys", "add", "bob", "--token", "bob-token")["token"], "bob-token")
        self.ok("keys", "revoke", "bob")
        self.assertEqual([k["name"] for k in self.file()["bearerKeys"]], ["alice"])
        self.ok("groups", "remove", "g1")
        self.assertEqual(self.file()["groups"], [])

        # Sessions: one opened over MCP, listed, ended.
        st, h, _, _ = request(self.edge.port, "POST", "/mcp", INIT, post_headers())
        self.assertEqual(st, 200)
        sid = h["mcp-session-id"]
        self.assertEqual([s["sessionId"] for s in self.js("sessions", "list")["sessions"]], [sid])
        self.ok("sessions", "end", sid)
        st, _, _, _ = request(self.edge.port, "POST", "/mcp", {"jsonrpc": "2.0", "id": 2, "method": "ping"},
                              post_headers(sid))
        self.assertEqual(st, 404)

        # A hand edit, then reload.
        doc = self.file()
        doc["mcpServers"]["alpha"]["args"].append("--hand-edited")
        with open(self.settings + ".new", "w") as f:
            json.dump(doc, f)
        os.rename(self.settings + ".new", self.settings)
        self.ok("reload")
        self.assertGreaterEqual(int(self.js("stats")["configVersion"]), 2)

    def test_exit_codes(self):
        self.assertEqual(self.ctl_run("servers", "list", token=None)[0], 4)
        self.assertEqual(self.ctl_run("servers", "list", token="wrong")[0], 4)
        self.assertEqual(self.ctl_run("servers", "get", "nope")[0], 1)
        rc, _, err = self.ctl_run("servers", "add", "bad", '{"command": 5}')
        self.assertEqual(rc, 1)
        self.assertIn("mcpServers.bad.command", err)
        self.assertNotIn("bad", self.file()["mcpServers"], "a refused change writes nothing")
        self.assertEqual(self.ctl_run("servers", "frobnicate")[0], 2)
        self.assertEqual(self.ctl_run("servers", "get")[0], 2)
        self.assertEqual(self.ctl_run("--timeout", "x", "stats")[0], 2)
        self.assertEqual(self.ctl_run("keys", "add", "k", "--colour", "red")[0], 2)
        rc, out, _ = self.ctl_run("servers", "add", "--help")
        self.assertEqual(rc, 0)
        self.assertIn("usage: mcphubctl", out)
        with hub.refused_port() as port:
            self.assertEqual(self.ctl_run("stats", addr=f"127.0.0.1:{port}")[0], 3)

    def test_add_and_remove_seen_by_a_client(self):
        st, h, _, _ = request(self.edge.port, "POST", "/mcp", INIT, post_headers())
        sid = h["mcp-session-id"]
        request(self.edge.port, "POST", "/mcp", {"jsonrpc": "2.0", "method": "notifications/initialized"},
                post_headers(sid))
        stream = Stream(self.edge.port, sid)
        try:
            self.ok("servers", "add", "gamma", json.dumps(fixture("gamma")))
            wait_for(lambda: any(e.get("method") == "notifications/tools/list_changed" for e in stream.events),
                     what="list_changed on the client's stream")
            st, _, body, _ = request(self.edge.port, "POST", "/mcp",
                                     {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, post_headers(sid))
            names = [t["name"] for t in body["result"]["tools"]]
            self.assertIn("gamma-echo", names)
            pid = wait_for(lambda: [i["pid"] for i in self.js("instances", "list", "--server", "gamma")["instances"]
                                    if i["pid"]], what="gamma's pid")[0]
            self.ok("servers", "remove", "gamma")
            wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="gamma's process to stop")
        finally:
            stream.close()

    def test_grpcio_client_with_the_proto_files(self):
        with grpc.insecure_channel(f"127.0.0.1:{self.ctl.admin_port}") as ch:
            call = ch.unary_unary("/mcphub.v1.Admin/ListInstances",
                                  request_serializer=admin_pb2.ListInstancesRequest.SerializeToString,
                                  response_deserializer=admin_pb2.ListInstancesReply.FromString)
            with self.assertRaises(grpc.RpcError) as e:
                call(admin_pb2.ListInstancesRequest(), timeout=5)
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
            reply = call(admin_pb2.ListInstancesRequest(server="alpha"), timeout=5,
                         metadata=[("authorization", f"Bearer {TOKEN}")])
            self.assertEqual([i.server for i in reply.instances], ["alpha"])
            self.assertGreater(reply.instances[0].pid, 0)


class ReflectionTest(unittest.TestCase):
    """A generic client that has no .proto file: it lists control's services through gRPC
    server reflection, fetches the Admin service's descriptor, builds its message classes
    from it and calls ListServers with them."""

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        path = os.path.join(self.dir.name, "mcp_settings.json")
        with open(path, "w") as f:
            json.dump({"mcpServers": {"alpha": fixture("alpha")}}, f)
        self.ctl = hub.start_control(["--config", path])

    def tearDown(self):
        self.assertEqual(self.ctl.stop(), 0, self.ctl.log())
        hub.assert_no_children()
        self.dir.cleanup()

    def reflect(self, port, requests, pb=reflection_pb2, version="v1alpha"):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            call = ch.stream_stream(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                                    request_serializer=pb.ServerReflectionRequest.SerializeToString,
                                    response_deserializer=pb.ServerReflectionResponse.FromString)
            return list(call(iter(requests), timeout=10))

    def test_list_describe_and_call_without_proto_files(self):
        pb = reflection_pb2
        got = self.reflect(self.ctl.admin_port, [
            pb.ServerReflectionRequest(list_services=""),
            pb.ServerReflectionRequest(file_containing_symbol="mcphub.v1.Admin"),
            pb.ServerReflectionRequest(file_containing_symbol="mcphub.v1.Admin.ListServers"),
            pb.ServerReflectionRequest(file_by_filename="grpc/health/v1/health.proto"),
            pb.ServerReflectionRequest(file_containing_symbol="no.such.Thing"),
        ])
        self.assertEqual(len(got), 5, "one answer per request, in order")
        names = [s.name for s in got[0].list_services_response.service]
        for want in ["mcphub.v1.Admin", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"]:
            self.assertIn(want, names)
        self.assertNotIn("mcphub.v1.Gateway", names, "the Gateway lives on the other listener")
        self.assertEqual(got[1].file_descriptor_response.file_descriptor_proto,
                         got[2].file_descriptor_response.file_descriptor_proto)
        health = descriptor_pb2.FileDescriptorProto.FromString(
            got[3].file_descriptor_response.file_descriptor_proto[0])
        self.assertEqual(health.package, "grpc.health.v1")
        self.assertEqual(got[4].error_response.error_code, grpc.StatusCode.NOT_FOUND.value[0])

        # Build Admin's messages from the served descriptor alone, and call it.
        pool = descriptor_pool.DescriptorPool()
        fd = descriptor_pb2.FileDescriptorProto.FromString(got[1].file_descriptor_response.file_descriptor_proto[0])
        self.assertEqual(fd.name, "mcphub/v1/admin.proto")
        pool.Add(fd)
        method = pool.FindServiceByName("mcphub.v1.Admin").methods_by_name["ListServers"]
        factory = message_factory.MessageFactory(pool)
        make = getattr(message_factory, "GetMessageClass", None) or factory.GetPrototype
        req_cls, resp_cls = make(method.input_type), make(method.output_type)
        with grpc.insecure_channel(f"127.0.0.1:{self.ctl.admin_port}") as ch:
            reply = ch.unary_unary("/mcphub.v1.Admin/ListServers",
                                   request_serializer=req_cls.SerializeToString,
                                   response_deserializer=resp_cls.FromString)(req_cls(), timeout=5)
        self.assertEqual([s.name for s in reply.servers], ["alpha"])

    def test_v1_and_the_gateway_listener(self):
        pb = reflection_v1_pb2
        got = self.reflect(self.ctl.gateway_port, [pb.ServerReflectionRequest(list_services="")], pb=pb, version="v1")
        names = [s.name for s in got[0].list_services_response.service]
        self.assertIn("mcphub.v1.Gateway", names)
        self.assertIn("grpc.reflection.v1.ServerReflection", names)
        self.assertNotIn("mcphub.v1.Admin", names)


if __name__ == "__main__":
    unittest.main()
