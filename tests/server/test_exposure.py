#!/usr/bin/env python3
"""What a browser or a slow client can do to `hearth serve` bound on loopback with default
settings: DNS rebinding is refused by the Host check, CORS is off, a client that never
finishes its headers is cut off, and one address cannot hold every connection.

    HEARTH_SERVER_URL=http://127.0.0.1:PORT HEARTH_TEST_API_KEY=KEY python3 test_exposure.py
"""

import json
import os
import socket
import time
import unittest
import urllib.error
import urllib.request
from urllib.parse import urlparse

URL = os.environ["HEARTH_SERVER_URL"]
PORT = urlparse(URL).port


def get(path, headers):
    req = urllib.request.Request(URL + path, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


class ExposureTest(unittest.TestCase):
    def test_dns_rebinding_host_is_refused(self):
        status, _, body = get("/health", {"Host": "evil.example"})
        self.assertEqual(status, 403, body)
        self.assertEqual(json.loads(body)["error"]["code"], "host_not_allowed")
        status, _, _ = get("/v1/models", {"Host": f"evil.example:{PORT}"})
        self.assertEqual(status, 403)
        for ok in (f"localhost:{PORT}", f"127.0.0.1:{PORT}"):
            self.assertEqual(get("/health", {"Host": ok})[0], 200, ok)

    def test_cors_is_off_by_default(self):
        _, headers, _ = get("/health", {"Origin": "http://evil.example"})
        self.assertIsNone(headers.get("Access-Control-Allow-Origin"))
        req = urllib.request.Request(URL + "/v1/chat/completions", method="OPTIONS", headers={
            "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
        try:
            urllib.request.urlopen(req, timeout=10)
            self.fail("a preflight was accepted")
        except urllib.error.HTTPError as e:
            self.assertIsNone(e.headers.get("Access-Control-Allow-Origin"))

    def test_slow_headers_are_cut_off(self):
        s = socket.create_connection(("127.0.0.1", PORT))
        s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")  # never finished
        s.settimeout(30)
        t0 = time.time()
        self.assertEqual(s.recv(100), b"")
        self.assertLess(time.time() - t0, 15)

    def test_one_address_cannot_hold_every_connection(self):
        held = []
        try:
            for _ in range(40):
                held.append(socket.create_connection(("127.0.0.1", PORT)))
            c = held[-1]
            c.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            c.settimeout(10)
            self.assertIn(b" 429 ", c.recv(200).split(b"\r\n")[0])
        finally:
            for s in held:
                s.close()
        time.sleep(0.2)
        self.assertEqual(get("/health", {})[0], 200)


if __name__ == "__main__":
    unittest.main()
