#!/usr/bin/env python3
"""Tool calls in the Hermes format (`<tool_call>` JSON `</tool_call>`), end to end: a tiny
random-weight qwen2 with DeepSeek-R1-Distill-Qwen's vocabulary (where `<tool_call>` is one
token) and Qwen2.5-Instruct's chat template (tests/fixtures/templates), made by

    python3 test_reasoning.py --make-model VOCAB.gguf OUT.gguf qwen2 tests/fixtures/templates/qwen2.5-instruct.jinja
    HEARTH_HERMES_URL=http://127.0.0.1:PORT HEARTH_TEST_API_KEY=KEY python3 test_tools_hermes.py

(scripts/test-server.sh does both). The template lists the tools itself. Random weights
say nothing useful, so the model is steered with `logit_bias`: `<tool_call>` first. With
`tool_choice` `auto` the call's grammar starts when `<tool_call>` appears, so everything
after it is a valid call, which comes back parsed.
"""

import json
import os
import unittest

import jsonschema
import openai

import ready

URL = os.environ["HEARTH_HERMES_URL"]
TOOL_CALL = 151657  # `<tool_call>` in Qwen2's vocabulary
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {
    "type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]},
                                     "days": {"type": "integer", "minimum": 1, "maximum": 7}},
    "required": ["city", "days"]}}},
         {"type": "function", "function": {"name": "add", "parameters": {
             "type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9}},
             "required": ["a"]}}}]


class HermesToolsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        ready.wait_ready(URL)
        cls.client = openai.OpenAI(base_url=URL + "/v1", api_key=os.environ["HEARTH_TEST_API_KEY"],
                                   max_retries=0, timeout=120)

    def ask(self, choice, bias, **kw):
        return self.client.chat.completions.create(
            model="tiny-hermes", messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=TOOLS, tool_choice=choice, parallel_tool_calls=False,
            temperature=0, logit_bias=bias, seed=1, **{"max_tokens": 120, **kw})

    def check(self, r):
        c = r.choices[0]
        self.assertEqual(c.finish_reason, "tool_calls", c.message)
        self.assertEqual(len(c.message.tool_calls), 1)
        call = c.message.tool_calls[0]
        schema = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}[call.function.name]
        jsonschema.validate(json.loads(call.function.arguments), schema)
        return call

    def test_the_template_lists_the_tools(self):
        r = self.ask("none", {}, max_tokens=1)
        plain = self.client.chat.completions.create(
            model="tiny-hermes", messages=[{"role": "user", "content": "Weather in Paris?"}], max_tokens=1)
        self.assertGreater(r.usage.prompt_tokens, plain.usage.prompt_tokens + 50)

    def test_auto_constrains_a_started_call(self):
        # Only the marker is steered; the call after it is the grammar's and the model's.
        self.check(self.ask("auto", {str(TOOL_CALL): 100}))

    def test_auto_without_a_call_is_text(self):
        r = self.ask("auto", {str(TOOL_CALL): -100}, max_tokens=8)
        self.assertIsNone(r.choices[0].message.tool_calls)
        self.assertEqual(r.choices[0].finish_reason, "length")

    def test_required_and_named(self):
        self.check(self.ask("required", {}))
        call = self.check(self.ask({"type": "function", "function": {"name": "add"}}, {}))
        self.assertEqual(call.function.name, "add")

    def test_streamed_call_equals_whole(self):
        whole = self.check(self.ask("required", {}))
        parts = ["", ""]
        for chunk in self.ask("required", {}, stream=True):
            for d in chunk.choices[0].delta.tool_calls or []:
                parts[0] += d.function.name or ""
                parts[1] += d.function.arguments or ""
        self.assertEqual(parts, [whole.function.name, whole.function.arguments])


if __name__ == "__main__":
    unittest.main()
