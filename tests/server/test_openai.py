#!/usr/bin/env python3
"""`hearth serve` through the real `openai` Python client (and raw HTTP for the errors the
client hides), against a running server with Gemma 3 270M (Q4_K_M).

    HEARTH_SERVER_URL=http://127.0.0.1:PORT HEARTH_TEST_API_KEY=KEY python3 test_openai.py

scripts/test-server.sh starts the server and sets these. Greedy texts are checked against
llama.cpp's greedy continuations in tests/fixtures/fidelity/greedy_llamacpp.json (made by
tests/fixtures/fidelity/llama_ref.py), up to the first step where llama.cpp's top-2 logit
margin is below 0.5 (past that, two correct engines may pick different tokens).
"""

import json
import os
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path

import openai

import ready

URL = os.environ["HEARTH_SERVER_URL"]
KEY = os.environ["HEARTH_TEST_API_KEY"]
MODEL_ID = "gemma-3-270m-q4_k_m"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "fidelity" / "greedy_llamacpp.json"
CASES = {c["name"]: c for c in json.loads(FIXTURE.read_text())["cases"]}


def stable_prefix(case, min_margin=0.5):
    """llama.cpp's greedy text up to the first step it chose at a small margin."""
    text = ""
    for step in case["steps"]:
        if step["margin"] < min_margin:
            break
        text += step["piece"]
    return text


def http(method, path, body=None, key=KEY, headers=None):
    """(status, parsed JSON body) of a raw request."""
    req = urllib.request.Request(URL + path, data=body, method=method)
    if key is not None:
        req.add_header("Authorization", f"Bearer {key}")
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_ready(timeout=120.0):
    ready.wait_ready(URL, timeout)


class OpenAITest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        wait_ready()
        cls.client = openai.OpenAI(base_url=URL + "/v1", api_key=KEY, max_retries=0, timeout=120)

    def assert_error(self, status, body, code, param=None):
        self.assertEqual(status, code, body)
        err = body["error"]
        self.assertEqual(set(err), {"message", "type", "param", "code"})
        self.assertIsInstance(err["message"], str)
        self.assertTrue(err["message"])
        if param is not None:
            self.assertEqual(err["param"], param)

    # --- health and models -------------------------------------------------------------

    def test_health_needs_no_key(self):
        # Not sealed here (tests/server/test_sealed.py runs a sealed server).
        self.assertEqual(http("GET", "/health", key=None),
                         (200, {"status": "ok", "seal": {"sealed": False}}))

    def test_models_list(self):
        models = self.client.models.list()
        ids = [m.id for m in models.data]
        self.assertEqual(ids, [MODEL_ID])
        self.assertEqual(models.data[0].object, "model")

    # --- generation against llama.cpp's greedy text ------------------------------------

    def test_chat_greedy_matches_llama_cpp(self):
        case = CASES["chat_template"]
        want = stable_prefix(case)
        self.assertGreater(len(want), 10)
        r = self.client.chat.completions.create(
            model=MODEL_ID,
            messages=[{"role": "user", "content": "What is the capital of Italy?"}],
            max_tokens=24, temperature=0)
        msg = r.choices[0].message
        self.assertEqual(msg.role, "assistant")
        self.assertTrue(msg.content.startswith(want), (msg.content, want))
        self.assertEqual(r.object, "chat.completion")
        self.assertEqual(r.model, MODEL_ID)
        # Usage: llama.cpp's prompt had no BOS printed; the tokenizer adds one.
        self.assertEqual(r.usage.prompt_tokens, case["n_prompt"])
        self.assertEqual(r.usage.completion_tokens, 24)
        self.assertEqual(r.usage.total_tokens, case["n_prompt"] + 24)
        self.assertEqual(r.choices[0].finish_reason, "length")
        self.assertEqual(r.usage.completion_tokens_details.reasoning_tokens, 0)

    def test_content_parts_equal_a_string(self):
        kw = dict(model=MODEL_ID, max_tokens=8, temperature=0)
        a = self.client.chat.completions.create(
            messages=[{"role": "user", "content": "What is the capital of Italy?"}], **kw)
        b = self.client.chat.completions.create(
            messages=[{"role": "user", "content": [{"type": "text", "text": "What is the capital of Italy?"}]}],
            **kw)
        self.assertEqual(a.choices[0].message.content, b.choices[0].message.content)

    def test_completion_greedy_matches_llama_cpp(self):
        for name in ("planets_list", "france", "story"):
            case = CASES[name]
            r = self.client.completions.create(
                model=MODEL_ID, prompt=case["prompt"], max_tokens=32, temperature=0)
            text = r.choices[0].text
            self.assertTrue(text.startswith(stable_prefix(case)), (name, text))
            self.assertEqual(r.object, "text_completion")
            self.assertEqual(r.usage.prompt_tokens, case["n_prompt"], name)
            self.assertEqual(r.usage.completion_tokens, 32, name)
            self.assertEqual(r.choices[0].finish_reason, "length")

    def test_streamed_chat_equals_unstreamed(self):
        kw = dict(model=MODEL_ID, messages=[{"role": "user", "content": "What is the capital of Italy?"}],
                  max_tokens=20, temperature=0)
        whole = self.client.chat.completions.create(**kw).choices[0].message.content
        chunks = list(self.client.chat.completions.create(
            stream=True, stream_options={"include_usage": True}, **kw))
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(text, whole)
        self.assertGreater(sum(1 for c in chunks if c.choices and c.choices[0].delta.content), 5,
                           "the text arrives in several deltas")
        finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        self.assertEqual(finals, ["length"])
        # include_usage: a last chunk with no choices and the usage.
        self.assertEqual(chunks[-1].choices, [])
        self.assertEqual(chunks[-1].usage.completion_tokens, 20)
        self.assertEqual(chunks[-1].usage.prompt_tokens, CASES["chat_template"]["n_prompt"])
        self.assertTrue(all(c.usage is None for c in chunks[:-1]))

    def test_streamed_completion(self):
        case = CASES["planets_list"]
        chunks = list(self.client.completions.create(
            model=MODEL_ID, prompt=case["prompt"], max_tokens=16, temperature=0, stream=True))
        text = "".join(c.choices[0].text for c in chunks)
        self.assertTrue(text.startswith(stable_prefix(case)[:20]), text)
        self.assertEqual(chunks[-1].choices[0].finish_reason, "length")

    # --- stop strings ------------------------------------------------------------------

    def test_stop_string_ends_the_text_and_is_not_shown(self):
        case = CASES["planets_list"]
        # llama.cpp: " Venus\n3. Earth\n4. Mars..."; "\n4." spans several tokens.
        self.assertTrue(stable_prefix(case).startswith(" Venus\n3. Earth\n4."))
        r = self.client.completions.create(
            model=MODEL_ID, prompt=case["prompt"], max_tokens=32, temperature=0, stop=["\n4.", "Pluto"])
        self.assertEqual(r.choices[0].text, " Venus\n3. Earth")
        self.assertEqual(r.choices[0].finish_reason, "stop")
        self.assertLess(r.usage.completion_tokens, 32)

    def test_stop_string_across_tokens_in_a_stream(self):
        case = CASES["planets_list"]
        chunks = list(self.client.completions.create(
            model=MODEL_ID, prompt=case["prompt"], max_tokens=32, temperature=0, stream=True,
            stop="\n4."))
        pieces = [c.choices[0].text for c in chunks]
        self.assertEqual("".join(pieces), " Venus\n3. Earth")
        self.assertFalse(any("4" in p for p in pieces), pieces)
        self.assertEqual(chunks[-1].choices[0].finish_reason, "stop")

    def test_chat_stop_string(self):
        r = self.client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": "What is the capital of Italy?"}],
            max_tokens=24, temperature=0, stop="Italy")
        self.assertEqual(r.choices[0].message.content, "What is the capital of ")
        self.assertEqual(r.choices[0].finish_reason, "stop")

    # --- sampling ----------------------------------------------------------------------

    def test_seed_reproduces(self):
        kw = dict(model=MODEL_ID, prompt="Once upon a time", max_tokens=24, temperature=1.0,
                  top_p=1.0, extra_body={"top_k": 0, "min_p": 0.0})
        a = self.client.completions.create(seed=1234, **kw).choices[0].text
        b = self.client.completions.create(seed=1234, **kw).choices[0].text
        self.assertEqual(a, b)
        others = {self.client.completions.create(seed=s, **kw).choices[0].text for s in (1, 2, 3)}
        self.assertGreater(len(others | {a}), 1, "different seeds give different texts")

    def test_logit_bias_bans_a_token(self):
        case = CASES["planets_list"]
        first = case["steps"][0]
        r = self.client.completions.create(
            model=MODEL_ID, prompt=case["prompt"], max_tokens=4, temperature=0,
            logit_bias={str(first["token"]): -100})
        self.assertFalse(r.choices[0].text.startswith(first["piece"]), r.choices[0].text)

    def test_max_tokens_one(self):
        r = self.client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_completion_tokens=1,
            temperature=0)
        self.assertEqual(r.usage.completion_tokens, 1)
        self.assertEqual(r.choices[0].finish_reason, "length")

    def test_penalties_and_extra_fields_accepted(self):
        r = self.client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
            presence_penalty=0.5, frequency_penalty=0.5, user="tester", seed=1,
            extra_body={"repeat_penalty": 1.1, "top_k": 20, "min_p": 0.1, "some_unknown_field": [1, 2]})
        self.assertEqual(r.usage.completion_tokens, 4)

    # --- errors ------------------------------------------------------------------------

    def test_n_choices_share_one_prompt(self):
        r = self.client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": "Name a colour."}], n=3,
            max_tokens=6, temperature=1.0, seed=11, extra_body={"ignore_eos": True})
        self.assertEqual([c.index for c in r.choices], [0, 1, 2])
        self.assertTrue(all(c.finish_reason == "length" for c in r.choices))
        self.assertEqual(r.usage.completion_tokens, 18)
        # The prompt is processed once (hearth's engine tests check the forks token for
        # token against single requests seeded seed + index).
        self.assertEqual(r.usage.prompt_tokens,
                         self.client.chat.completions.create(
                             model=MODEL_ID, messages=[{"role": "user", "content": "Name a colour."}],
                             max_tokens=1).usage.prompt_tokens)

    def test_n_out_of_range_is_refused(self):
        for n in (0, 1000):
            with self.assertRaises(openai.BadRequestError) as cm:
                self.client.chat.completions.create(
                    model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], n=n)
            self.assertEqual(cm.exception.status_code, 400)
            self.assertEqual(cm.exception.body["param"], "n")

    def test_wrong_key_is_401(self):
        bad = openai.OpenAI(base_url=URL + "/v1", api_key="wrong", max_retries=0)
        with self.assertRaises(openai.AuthenticationError):
            bad.models.list()
        status, body = http("GET", "/v1/models", key=None)
        self.assert_error(status, body, 401)
        self.assertEqual(body["error"]["type"], "authentication_error")
        status, body = http("POST", "/v1/chat/completions", b"{}", key="wrong")
        self.assert_error(status, body, 401)

    def test_unknown_route_is_404(self):
        status, body = http("GET", "/v1/nothing-here")
        self.assert_error(status, body, 404)
        with self.assertRaises(openai.NotFoundError):
            self.client.embeddings.create(model=MODEL_ID, input="x")

    def test_body_too_large_is_413(self):
        body = json.dumps({"model": MODEL_ID, "prompt": "x" * (5 << 20)}).encode()
        status, err = http("POST", "/v1/completions", body)
        self.assert_error(status, err, 413)

    def test_malformed_json_is_400(self):
        status, body = http("POST", "/v1/chat/completions", b'{"messages": [')
        self.assert_error(status, body, 400)
        self.assertIn("JSON", body["error"]["message"])

    def test_wrong_types_and_ranges_are_400(self):
        base = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}]}
        for extra, param in [({"temperature": "hot"}, "temperature"), ({"temperature": 5}, "temperature"),
                             ({"max_tokens": -3}, "max_tokens"), ({"top_p": 1.5}, "top_p"),
                             ({"stop": ["a", "b", "c", "d", "e"]}, "stop"), ({"stream": "yes"}, "stream"),
                             ({"messages": "Hi"}, "messages"), ({"logit_bias": {"999999999": 1}}, "logit_bias"),
                             ({"presence_penalty": 9}, "presence_penalty")]:
            status, body = http("POST", "/v1/chat/completions", json.dumps({**base, **extra}).encode())
            self.assert_error(status, body, 400, param)
        with self.assertRaises(openai.BadRequestError):
            self.client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}],
                                                temperature=-1)

    def test_prompt_longer_than_context_is_400_with_numbers(self):
        with self.assertRaises(openai.BadRequestError) as cm:
            self.client.completions.create(model=MODEL_ID, prompt="word " * 5000, max_tokens=4)
        msg = cm.exception.body["message"]
        self.assertIn("4096", msg)  # scripts/test-server.sh's --ctx
        self.assertRegex(msg, r"prompt is \d{4} tokens")

    # --- cancellation ------------------------------------------------------------------

    def test_disconnect_cancels_generation(self):
        stream = self.client.completions.create(
            model=MODEL_ID, prompt="Once upon a time", max_tokens=1000, temperature=1.0, seed=5,
            top_p=1.0, logit_bias={"1": -100, "106": -100}, stream=True,
            extra_body={"top_k": 0, "min_p": 0.0})
        for i, _ in enumerate(stream):
            if i == 3:
                break
        stream.close()
        # If the engine kept generating the ~1000 tokens, this would wait for them.
        t = time.time()
        r = self.client.completions.create(model=MODEL_ID, prompt="Hi", max_tokens=2, temperature=0)
        self.assertEqual(r.usage.completion_tokens, 2)
        self.assertLess(time.time() - t, 5.0)


if __name__ == "__main__":
    unittest.main()
