#!/usr/bin/env python3
"""Graceful drain on SIGTERM: `/health` turns not-ready, new requests get 503 with
`Retry-After`, the running stream finishes whole, and the process exits 0.

    HEARTH_BIN=target/release/hearth HEARTH_MODEL=MODEL.gguf python3 test_drain.py

Starts its own server (scripts/test-server.sh runs it).
"""

import json
import os
import signal
import socket
import subprocess
import threading
import time
import unittest
import urllib.error
import urllib.request

import openai

import ready


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DrainTest(unittest.TestCase):
    def test_sigterm_drains_then_exits_0(self):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([os.environ["HEARTH_BIN"], "serve", os.environ["HEARTH_MODEL"],
                                   "--port", str(port), "--ctx", "2048", "-t", "2"],
                                  stderr=subprocess.PIPE, text=True)
        try:
            ready.wait_ready(url)
            client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
            first_chunk = threading.Event()
            result = {}

            def stream():
                s = client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "Tell a story."}], max_tokens=150,
                    temperature=0, stream=True, extra_body={"ignore_eos": True},
                    stream_options={"include_usage": True})
                text, finish, usage = "", None, None
                for chunk in s:
                    first_chunk.set()
                    if chunk.choices:
                        text += chunk.choices[0].delta.content or ""
                        finish = chunk.choices[0].finish_reason or finish
                    if chunk.usage:
                        usage = chunk.usage
                result.update(text=text, finish=finish, usage=usage)

            t = threading.Thread(target=stream)
            t.start()
            self.assertTrue(first_chunk.wait(60))
            server.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            try:
                urllib.request.urlopen(url + "/health", timeout=10)
                self.fail("/health still ready while draining")
            except urllib.error.HTTPError as e:
                self.assertEqual(e.code, 503)
                self.assertEqual(json.loads(e.read())["status"], "draining")
            req = urllib.request.Request(url + "/v1/chat/completions", method="POST",
                                         data=json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(),
                                         headers={"Content-Type": "application/json"})
            try:
                urllib.request.urlopen(req, timeout=10)
                self.fail("a new request was accepted while draining")
            except urllib.error.HTTPError as e:
                self.assertEqual(e.code, 503)
                self.assertEqual(e.headers.get("Retry-After"), "1")
            t.join(120)
            self.assertEqual(result.get("finish"), "length", result)
            self.assertEqual(result["usage"].completion_tokens, 150)
            self.assertEqual(server.wait(60), 0)
            log = server.stderr.read()
            self.assertIn("every request finished", log)
        finally:
            if server.poll() is None:
                server.kill()
            server.stderr.close()


if __name__ == "__main__":
    unittest.main()
