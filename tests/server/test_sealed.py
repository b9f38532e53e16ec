#!/usr/bin/env python3
"""`hearth serve --sealed`: the kernel's seal is in force on the running server and it
still answers.

    HEARTH_SEALED_URL=http://127.0.0.1:PORT HEARTH_SEALED_PID=PID HEARTH_TEST_API_KEY=KEY python3 test_sealed.py

scripts/test-server.sh starts the server. The refusals themselves (an outbound TCP connect
to a loopback port, a UDP socket, a DNS lookup) are tried by crates/seal/tests/sealed.rs
under the same seal, and by the server's own start-up self-test, whose line is checked
here from the log.
"""

import json
import os
import unittest
import urllib.request

import openai

URL = os.environ["HEARTH_SEALED_URL"]
PID = os.environ["HEARTH_SEALED_PID"]
LOG = os.environ.get("HEARTH_SEALED_LOG")


class SealedTest(unittest.TestCase):
    def test_kernel_reports_the_seal(self):
        with open(f"/proc/{PID}/status") as f:
            status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        self.assertEqual(status["Seccomp"].strip(), "2")
        self.assertEqual(status["NoNewPrivs"].strip(), "1")

    def test_health_reports_the_mechanisms(self):
        with urllib.request.urlopen(URL + "/health", timeout=10) as r:
            body = json.loads(r.read())
        self.assertTrue(body["seal"]["sealed"], body)
        self.assertIn("seccomp", body["seal"]["mechanisms"])

    def test_self_test_ran(self):
        if not LOG:
            self.skipTest("no log given")
        with open(LOG) as f:
            line = next(l for l in f if l.startswith("hearth: sealed:"))
        self.assertIn("outbound TCP connect: denied", line)
        self.assertIn("UDP send: denied", line)

    def test_sealed_server_answers(self):
        client = openai.OpenAI(base_url=URL + "/v1", api_key=os.environ["HEARTH_TEST_API_KEY"])
        r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}],
                                           max_tokens=8, temperature=0)
        self.assertEqual(r.usage.completion_tokens, 8)
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0,
            stream=True) if c.choices)
        self.assertEqual(streamed, r.choices[0].message.content)


if __name__ == "__main__":
    unittest.main()
