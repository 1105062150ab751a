"""Malformed and hostile HTTP requests against the real hub (control + edge + the C fixture):
each gets its exact status and JSON-RPC error, and the hub answers the next good request.
Also bearer keys end to end: 401 with WWW-Authenticate, 403 for a route the key may not
use, and a session bound to the key that opened it."""

import json
import os
import socket
import unittest

import hub
from hub import ACCEPT, INIT, post_headers, request, start_hub


class HubCase(unittest.TestCase):
    """One control + edge for the whole class, on cls.settings(fixture path)."""

    @classmethod
    def setUpClass(cls):
        cls.dir, cls.ctl, cls.edge = start_hub(cls.settings(os.path.join(hub.BIN_DIR, "mcphub-fixture")))
        cls.port = cls.edge.port

    @classmethod
    def tearDownClass(cls):
        assert cls.edge.stop() == 0, cls.edge.log()
        assert cls.ctl.stop() == 0, cls.ctl.log()
        cls.dir.cleanup()
        hub.assert_no_children()


class HostileRequestsTest(HubCase):
    @staticmethod
    def settings(fixture):
        return {"mcpServers": {"fixture": {"command": fixture}}}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        status, headers, body, _ = request(cls.port, "POST", "/mcp/fixture", INIT, post_headers(version=None))
        assert status == 200, (status, body)
        cls.session = headers["mcp-session-id"]
        request(cls.port, "POST", "/mcp/fixture",
                {"jsonrpc": "2.0", "method": "notifications/initialized"}, post_headers(cls.session))

    def good_call(self):
        status, _, body, _ = request(self.port, "POST", "/mcp/fixture",
                                     {"jsonrpc": "2.0", "id": 99, "method": "tools/call",
                                      "params": {"name": "echo", "arguments": {"message": "ok"}}},
                                     post_headers(self.session))
        self.assertEqual(status, 200)
        self.assertEqual(body["result"]["content"][0]["text"], "ok")

    def test_table(self):
        s = self.session
        ping = {"jsonrpc": "2.0", "id": 7, "method": "ping"}
        deep = "[" * 100 + "]" * 100
        cases = [
            # name, method, path, raw body, headers, status, JSON-RPC code (None: no body check)
            ("bad json", "POST", "/mcp/fixture", b"{not json", post_headers(s), 400, -32700),
            ("truncated json", "POST", "/mcp/fixture", b'{"jsonrpc":"2.0","id":1', post_headers(s), 400, -32700),
            ("not an object", "POST", "/mcp/fixture", b'"ping"', post_headers(s), 400, -32600),
            ("wrong jsonrpc", "POST", "/mcp/fixture", b'{"jsonrpc":"1.0","id":1,"method":"ping"}',
             post_headers(s), 400, -32600),
            ("method not a string", "POST", "/mcp/fixture", b'{"jsonrpc":"2.0","id":1,"method":5}',
             post_headers(s), 400, -32600),
            ("null id", "POST", "/mcp/fixture", b'{"jsonrpc":"2.0","id":null,"method":"ping"}',
             post_headers(s), 400, -32600),
            ("deep nesting", "POST", "/mcp/fixture",
             ('{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":%s}}' % deep).encode(),
             post_headers(s), 400, -32700),
            ("invalid utf-8", "POST", "/mcp/fixture", b'{"jsonrpc":"2.0","id":1,"method":"p\xff\xfe"}',
             post_headers(s), 400, -32700),
            ("batch in 2025-11-25", "POST", "/mcp/fixture", json.dumps([ping]).encode(),
             post_headers(s), 400, -32600),
            ("unknown session", "POST", "/mcp/fixture", json.dumps(ping).encode(),
             post_headers("AAAAAAAAAAAAAAAAAAAAAA"), 404, -32001),
            ("missing session", "POST", "/mcp/fixture", json.dumps(ping).encode(), post_headers(None), 400, -32000),
            ("bad protocol version", "POST", "/mcp/fixture", json.dumps(ping).encode(),
             post_headers(s, version="1999-01-01"), 400, -32000),
            ("accept without sse", "POST", "/mcp/fixture", json.dumps(ping).encode(),
             post_headers(s, Accept="application/json"), 406, -32000),
            ("wrong content type", "POST", "/mcp/fixture", json.dumps(ping).encode(),
             post_headers(s, **{"Content-Type": "text/plain"}), 415, -32000),
            ("evil origin", "POST", "/mcp/fixture", json.dumps(ping).encode(),
             post_headers(s, Origin="http://evil.example"), 403, -32000),
            ("evil host", "POST", "/mcp/fixture", json.dumps(ping).encode(),
             post_headers(s, Host="evil.example"), 403, -32000),
            ("unknown route", "POST", "/mcp/nope", json.dumps(ping).encode(), post_headers(s), 404, -32000),
            ("put", "PUT", "/mcp/fixture", json.dumps(ping).encode(), post_headers(s), 405, -32000),
            ("second initialize with a session", "POST", "/mcp/fixture", json.dumps(INIT).encode(),
             post_headers(s), 400, -32600),
            ("get without sse accept", "GET", "/mcp/fixture", None,
             {"Accept": "application/json", "Mcp-Session-Id": s}, 406, -32000),
            ("delete unknown session", "DELETE", "/mcp/fixture", None,
             {"Mcp-Session-Id": "AAAAAAAAAAAAAAAAAAAAAA", "MCP-Protocol-Version": "2025-11-25"}, 404, None),
            ("messages without session", "POST", "/messages", json.dumps(ping).encode(),
             {"Content-Type": "application/json"}, 400, None),
        ]
        for name, method, path, raw, headers, want, code in cases:
            with self.subTest(name):
                status, h, body, text = request(self.port, method, path, raw=raw, headers=headers)
                self.assertEqual(status, want, f"{name}: {text[:200]!r}")
                if code is not None:
                    self.assertIsNotNone(body, f"{name}: not JSON: {text[:200]!r}")
                    self.assertEqual(body["jsonrpc"], "2.0")
                    self.assertEqual(body["error"]["code"], code, f"{name}: {body}")
                if want == 405:
                    self.assertIn("POST", h.get("allow", ""))
                # The hub keeps answering after each one.
                self.good_call()

    def test_huge_body_is_refused_before_it_is_read(self):
        # A client announcing 64 MiB gets 413 at once, before sending the body.
        head = ("POST /mcp/fixture HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Accept: {ACCEPT}\r\nMcp-Session-Id: {self.session}\r\n"
                "MCP-Protocol-Version: 2025-11-25\r\nContent-Length: 67108864\r\n\r\n")
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(head.encode() + b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"')
            data = b""
            while True:  # until the whole answer is in: headers, then Content-Length bytes
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                head_end = data.find(b"\r\n\r\n")
                if head_end >= 0:
                    length = [int(l.split(b":")[1]) for l in data[:head_end].split(b"\r\n")
                              if l.lower().startswith(b"content-length:")]
                    if length and len(data) >= head_end + 4 + length[0]:
                        break
            reply = data.decode(errors="replace")
        self.assertTrue(reply.startswith("HTTP/1.1 413"), reply[:200])
        body = json.loads(reply.split("\r\n\r\n", 1)[1])
        self.assertEqual(body["error"]["code"], -32000)
        self.good_call()

    def test_slowloris_and_garbage_bytes(self):
        # Raw garbage on the socket is closed or refused; the hub stays up.
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"\x16\x03\x01\x02\x00garbage that is not http\r\n\r\n")
            try:
                sock.recv(4096)
            except OSError:
                pass
        self.good_call()


class BearerKeysTest(HubCase):
    @staticmethod
    def settings(fixture):
        return {
            "mcpServers": {"a": {"command": fixture}, "b": {"command": fixture}},
            "groups": [{"name": "ga", "servers": ["a"]}],
            "bearerKeys": [
                {"name": "k-all", "token": "secret-all", "accessType": "all"},
                {"name": "k-a", "token": "secret-a", "accessType": "groups", "allowedGroups": ["ga"]},
            ],
            "systemConfig": {"routing": {"enableBearerAuth": True}},
        }

    def init(self, path, token):
        h = post_headers(version=None)
        if token:
            h["Authorization"] = f"Bearer {token}"
        return request(self.edge.port, "POST", path, INIT, h)

    def test_keys(self):
        status, h, body, _ = self.init("/mcp/ga", None)
        self.assertEqual(status, 401)
        self.assertTrue(h["www-authenticate"].startswith("Bearer"))
        self.assertEqual(self.init("/mcp/ga", "wrong")[0], 401)
        self.assertEqual(self.init("/mcp/b", "secret-a")[0], 403)
        self.assertEqual(self.init("/mcp", "secret-a")[0], 403)
        status, h, body, _ = self.init("/mcp/ga", "secret-a")
        self.assertEqual(status, 200, body)
        session = h["mcp-session-id"]
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        mine = post_headers(session, Authorization="Bearer secret-a")
        self.assertEqual(request(self.edge.port, "POST", "/mcp/ga", ping, mine)[0], 200)
        # Another valid key may not use this session.
        other = post_headers(session, Authorization="Bearer secret-all")
        self.assertEqual(request(self.edge.port, "POST", "/mcp/ga", ping, other)[0], 403)
        self.assertEqual(self.init("/mcp", "secret-all")[0], 200)


if __name__ == "__main__":
    unittest.main(verbosity=2)
