#!/usr/bin/env python3
"""The `<think>…</think>` split of `hearth serve`, end to end through the `openai` client,
with DeepSeek-R1-Distill-Qwen's real tokenizer and chat template.

The model is a tiny random-weight `qwen2` (the distills' architecture) or `deepseek2`
(R1's own: latent attention and experts) carrying every `tokenizer.*` key (vocabulary,
merges, special ids, chat template) of the vocab-only GGUF that
tests/fixtures/tokenizer/fetch-vocabs.sh fetches. Make it, then test a server running it:

    python3 test_reasoning.py --make-model VOCAB.gguf OUT.gguf [qwen2|deepseek2 [TEMPLATE]]
    HEARTH_R1_URL=http://127.0.0.1:PORT HEARTH_TEST_API_KEY=KEY python3 test_reasoning.py

scripts/test-server.sh does both, for each architecture. Random weights say nothing useful, so the output is
steered: greedy decoding with `logit_bias` in tiers 10 apart (far more than the tiny
model's logit spread) and `repeat_penalty` 10 (a used token's ~+100 logit drops to ~10,
below every unused tier) make the model emit the biased tokens once each, in tier order.
The expected text is that token sequence, decoded from the vocabulary here; the expected
split is computed from it here, independently of the server's splitter.

This template (the GGUF's, as published) ends the prompt with `<｜Assistant｜>`: it does
not open `<think>` itself, so the model's first token is `<think>`.
"""

import json
import os
import sys
import unittest

import gguf
import jsonschema
import openai

import ready

VOCAB = os.environ.get(
    "HEARTH_R1_VOCAB",
    os.path.expanduser("~/.cache/hearth/vocab/deepseek-r1-distill-qwen-7b.vocab.gguf"))
MODEL_ID = "tiny-r1"
QUESTION = "What is 2+2?"


def make_model(vocab_path, out_path, arch="qwen2", template_path=None):
    """A 2-layer model (n_embd 32) with the vocab file's tokenizer; weights from a fixed
    seed. `arch` qwen2 is the distills' own; deepseek2 is DeepSeek-R1's (latent attention,
    a dense block then a block of experts with a shared one)."""
    import numpy as np

    r = gguf.GGUFReader(vocab_path)
    n_vocab = len(r.fields["tokenizer.ggml.tokens"].data)
    n_embd, n_head, n_head_kv, n_ff, n_layer = 32, 2, 1, 64, 2
    hd = n_embd // n_head
    w = gguf.GGUFWriter(out_path, arch)
    w.add_name(f"hearth tiny r1 {arch} (random weights)")
    w.add_context_length(4096)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    for key, f in r.fields.items():
        if key == "tokenizer.chat_template" and template_path:
            # Another template over the same vocabulary (test_tools_hermes.py: Qwen2.5's).
            with open(template_path, encoding="utf-8") as t:
                w.add_chat_template(t.read())
        elif key.startswith("tokenizer."):
            if f.types[0] == gguf.GGUFValueType.ARRAY:
                w.add_key_value(key, f.contents(), f.types[0], sub_type=f.types[1])
            else:
                w.add_key_value(key, f.contents(), f.types[0])
    rng = np.random.default_rng(1234)

    def u(shape, a):
        return rng.uniform(-a, a, size=shape).astype(np.float32)

    a = (3 / n_embd) ** 0.5
    w.add_tensor("token_embd.weight", u((n_vocab, n_embd), 1.0).astype(np.float16))
    w.add_tensor("output_norm.weight", 1 + u((n_embd,), 0.25))
    w.add_tensor("output.weight", u((n_vocab, n_embd), a).astype(np.float16))
    if arch == "deepseek2":
        deepseek2_layers(w, u, n_embd, n_head, n_ff, n_layer)
        n_layer = 0
    for il in range(n_layer):
        p = f"blk.{il}."
        w.add_tensor(p + "attn_norm.weight", 1 + u((n_embd,), 0.25))
        for name, n_out in (("attn_q", n_embd), ("attn_k", n_head_kv * hd), ("attn_v", n_head_kv * hd)):
            w.add_tensor(p + name + ".weight", u((n_out, n_embd), a))
            w.add_tensor(p + name + ".bias", u((n_out,), 0.5))
        w.add_tensor(p + "attn_output.weight", u((n_embd, n_embd), a))
        w.add_tensor(p + "ffn_norm.weight", 1 + u((n_embd,), 0.25))
        w.add_tensor(p + "ffn_gate.weight", u((n_ff, n_embd), a))
        w.add_tensor(p + "ffn_up.weight", u((n_ff, n_embd), a))
        w.add_tensor(p + "ffn_down.weight", u((n_embd, n_ff), (3 / n_ff) ** 0.5))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def deepseek2_layers(w, u, n_embd, n_head, n_ff, n_layer):
    """DeepSeek-V3/R1's block layout at toy size: queries through a low-rank bottleneck,
    a 48-value latent cache row (kv_lora_rank 32 + 16 rotated), block 0 dense, block 1
    four experts (two per token, sigmoid gating with a selection bias, two groups) and
    one shared expert."""
    q_lora, kv_lora, nope, rope, v_mla = 16, 32, 16, 16, 16
    n_expert, n_ff_exp = 4, 32
    a = (3 / n_embd) ** 0.5
    for key, v in (("attention.q_lora_rank", q_lora), ("attention.kv_lora_rank", kv_lora),
                   ("attention.key_length", kv_lora + rope), ("attention.value_length", kv_lora),
                   ("attention.key_length_mla", nope + rope), ("attention.value_length_mla", v_mla),
                   ("rope.dimension_count", rope), ("leading_dense_block_count", 1),
                   ("expert_count", n_expert), ("expert_used_count", 2),
                   ("expert_shared_count", 1), ("expert_feed_forward_length", n_ff_exp),
                   ("expert_group_count", 2), ("expert_group_used_count", 1),
                   ("expert_gating_func", 2)):
        w.add_uint32(f"deepseek2.{key}", v)
    w.add_bool("deepseek2.expert_weights_norm", True)
    w.add_float32("deepseek2.expert_weights_scale", 2.5)
    for il in range(n_layer):
        p = f"blk.{il}."
        w.add_tensor(p + "attn_norm.weight", 1 + u((n_embd,), 0.25))
        w.add_tensor(p + "attn_q_a.weight", u((q_lora, n_embd), a))
        w.add_tensor(p + "attn_q_a_norm.weight", 1 + u((q_lora,), 0.25))
        w.add_tensor(p + "attn_q_b.weight", u((n_head * (nope + rope), q_lora), (3 / q_lora) ** 0.5))
        w.add_tensor(p + "attn_kv_a_mqa.weight", u((kv_lora + rope, n_embd), a))
        w.add_tensor(p + "attn_kv_a_norm.weight", 1 + u((kv_lora,), 0.25))
        w.add_tensor(p + "attn_k_b.weight", u((n_head, kv_lora, nope), (3 / nope) ** 0.5))
        w.add_tensor(p + "attn_v_b.weight", u((n_head, v_mla, kv_lora), (3 / kv_lora) ** 0.5))
        w.add_tensor(p + "attn_output.weight", u((n_embd, n_head * v_mla), (3 / (n_head * v_mla)) ** 0.5))
        w.add_tensor(p + "ffn_norm.weight", 1 + u((n_embd,), 0.25))
        if il == 0:
            w.add_tensor(p + "ffn_gate.weight", u((n_ff, n_embd), a))
            w.add_tensor(p + "ffn_up.weight", u((n_ff, n_embd), a))
            w.add_tensor(p + "ffn_down.weight", u((n_embd, n_ff), (3 / n_ff) ** 0.5))
            continue
        w.add_tensor(p + "ffn_gate_inp.weight", u((n_expert, n_embd), a))
        w.add_tensor(p + "exp_probs_b.bias", u((n_expert,), 0.2))
        w.add_tensor(p + "ffn_gate_exps.weight", u((n_expert, n_ff_exp, n_embd), a))
        w.add_tensor(p + "ffn_up_exps.weight", u((n_expert, n_ff_exp, n_embd), a))
        w.add_tensor(p + "ffn_down_exps.weight", u((n_expert, n_embd, n_ff_exp), (3 / n_ff_exp) ** 0.5))
        w.add_tensor(p + "ffn_gate_shexp.weight", u((n_ff_exp, n_embd), a))
        w.add_tensor(p + "ffn_up_shexp.weight", u((n_ff_exp, n_embd), a))
        w.add_tensor(p + "ffn_down_shexp.weight", u((n_embd, n_ff_exp), (3 / n_ff_exp) ** 0.5))


def byte_decoder():
    """GPT-2's byte-level BPE alphabet back to bytes ('Ġ' -> b' ', 'Ċ' -> b'\\n')."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


class ReasoningTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        url = os.environ["HEARTH_R1_URL"]
        ready.wait_ready(url)
        cls.client = openai.OpenAI(base_url=url + "/v1",
                                   api_key=os.environ["HEARTH_TEST_API_KEY"], max_retries=0, timeout=120)
        tokens = gguf.GGUFReader(VOCAB).fields["tokenizer.ggml.tokens"].contents()
        dec = byte_decoder()

        def piece(tok):
            # Added tokens (`<think>`) are plain text; the rest are byte-level BPE.
            return tok if tok.startswith("<") else bytes(dec[ch] for ch in tok).decode()

        # " is" would be penalized by the prompt ("What is 2+2?"): not used.
        order = ["<think>", "Paris", "Ġnice", "Ġday", "</think>", "ĊĊ", "Hello", "Ġworld"]
        ids = [tokens.index(t) for t in order]
        cls.bias = {str(t): 100 - 10 * i for i, t in enumerate(ids)}
        cls.n_tokens = len(order)
        cls.raw = "".join(piece(t) for t in order)
        close = order.index("</think>")
        # The split, as llama.cpp's deepseek-r1 parser makes it: inside the tags is the
        # reasoning; the answer is what follows, leading whitespace dropped.
        cls.want_reasoning = "".join(piece(t) for t in order[1:close])
        cls.want_content = "".join(piece(t) for t in order[close + 1:]).lstrip()
        cls.want_reasoning_tokens = close + 1  # tags included
        assert cls.raw == "<think>Paris nice day</think>\n\nHello world", cls.raw

    def request(self, **kw):
        return dict(model=MODEL_ID, messages=[{"role": "user", "content": QUESTION}],
                    max_tokens=self.n_tokens, temperature=0, logit_bias=self.bias,
                    extra_body={"repeat_penalty": 10.0, **kw.pop("extra_body", {})}, **kw)

    def test_chat_template_and_tokenizer_are_r1s(self):
        # BOS, <｜User｜>, "What", " is", " ", "2", "+", "2", "?", <｜Assistant｜>: the
        # template renders, BOS is not doubled and the specials are single tokens.
        r = self.client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": QUESTION}],
                                                max_tokens=1, temperature=0)
        self.assertEqual(r.usage.prompt_tokens, 10)

    def test_split_unstreamed(self):
        r = self.client.chat.completions.create(**self.request())
        msg = r.choices[0].message
        self.assertEqual(msg.reasoning_content, self.want_reasoning)
        self.assertEqual(msg.content, self.want_content)
        self.assertEqual(r.usage.completion_tokens, self.n_tokens)
        self.assertEqual(r.usage.completion_tokens_details.reasoning_tokens, self.want_reasoning_tokens)
        self.assertEqual(r.choices[0].finish_reason, "length")

    def test_split_streamed(self):
        chunks = list(self.client.chat.completions.create(
            stream=True, stream_options={"include_usage": True}, **self.request()))
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        reasoning = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
        content = "".join(d.content or "" for d in deltas)
        self.assertEqual(reasoning, self.want_reasoning)
        self.assertEqual(content, self.want_content)
        # The reasoning streams as it comes, in more than one delta, and before the answer.
        kinds = [("r" if getattr(d, "reasoning_content", None) else "") + ("c" if d.content else "")
                 for d in deltas]
        kinds = [k for k in kinds if k]
        self.assertGreater(kinds.count("r"), 1, kinds)
        self.assertEqual(kinds, sorted(kinds, key=lambda k: k != "r"), kinds)
        self.assertEqual(chunks[-1].usage.completion_tokens, self.n_tokens)
        self.assertEqual(chunks[-1].usage.completion_tokens_details.reasoning_tokens,
                         self.want_reasoning_tokens)

    def test_stop_string_inside_the_reasoning(self):
        r = self.client.chat.completions.create(stop=" day", **self.request())
        msg = r.choices[0].message
        self.assertEqual(msg.reasoning_content, "Paris nice")
        self.assertFalse(msg.content)
        self.assertEqual(r.choices[0].finish_reason, "stop")

    # Regressions: the split could not be turned off, and completions were split too.

    def test_split_can_be_turned_off(self):
        # llama.cpp's request field.
        r = self.client.chat.completions.create(**self.request(extra_body={"reasoning_format": "none"}))
        msg = r.choices[0].message
        self.assertEqual(msg.content, self.raw)
        self.assertIsNone(getattr(msg, "reasoning_content", None))

    def test_text_completion_is_not_split(self):
        # /v1/completions has nowhere to put reasoning: its text must be the raw output.
        # The chat prompt as text; the tokenizer adds BOS.
        prompt = f"<｜User｜>{QUESTION}<｜Assistant｜>"
        r = self.client.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=self.n_tokens,
                                           temperature=0, logit_bias=self.bias,
                                           extra_body={"repeat_penalty": 10.0})
        self.assertEqual(r.usage.prompt_tokens, 10)
        self.assertEqual(r.choices[0].text, self.raw)

    # Structured output and reasoning controls (issue 14): the constraint starts after
    # the reasoning, and a budget closes the reasoning for the model.

    SCHEMA = {"type": "object",
              "properties": {"ok": {"type": "boolean"},
                             "n": {"type": "integer", "minimum": 0, "maximum": 99},
                             "tag": {"enum": ["alpha", "beta"]}},
              "required": ["ok", "n", "tag"], "additionalProperties": False}

    def think_first(self, budget, **kw):
        """Greedy, with `<think>` steered first; the rest is the random model's."""
        think = self.bias[next(iter(self.bias))]
        bias = {next(iter(self.bias)): think}
        return self.client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": QUESTION}], temperature=0,
            logit_bias=bias, extra_body={"repeat_penalty": 10.0, "reasoning_budget": budget},
            **kw)

    def test_free_thinking_then_schema_valid_json(self):
        for budget in (6, 24):
            r = self.think_first(budget, max_tokens=200, response_format={
                "type": "json_schema", "json_schema": {"name": "answer", "schema": self.SCHEMA}})
            msg, usage = r.choices[0].message, r.usage
            self.assertTrue(msg.reasoning_content, msg)
            self.assertLessEqual(usage.completion_tokens_details.reasoning_tokens, budget)
            doc = json.loads(msg.content)
            jsonschema.validate(doc, self.SCHEMA)
            self.assertEqual(r.choices[0].finish_reason, "stop")

    def test_budget_closes_the_reasoning(self):
        for budget in (5, 40):
            r = self.think_first(budget, max_tokens=budget + 20)
            msg = r.choices[0].message
            self.assertEqual(r.usage.completion_tokens_details.reasoning_tokens, budget)
            self.assertTrue(msg.reasoning_content)
            self.assertTrue(msg.content, "an answer follows the forced </think>")

    def test_reasoning_effort_sets_the_budget(self):
        # Documented: none/minimal 0 (the tags alone), low 512, medium 2048, high none.
        low = self.client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": QUESTION}], temperature=0,
            logit_bias={next(iter(self.bias)): 100}, max_tokens=560, reasoning_effort="low",
            extra_body={"repeat_penalty": 10.0})
        self.assertEqual(low.usage.completion_tokens_details.reasoning_tokens, 512)
        self.assertTrue(low.choices[0].message.content)
        none = self.client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": QUESTION}], temperature=0,
            logit_bias={next(iter(self.bias)): 100}, max_tokens=20, reasoning_effort="minimal",
            extra_body={"repeat_penalty": 10.0})
        self.assertLessEqual(none.usage.completion_tokens_details.reasoning_tokens, 2)
        self.assertTrue(none.choices[0].message.content)

    def test_required_tool_call_in_deepseeks_format(self):
        tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]},
                                             "days": {"type": "integer", "minimum": 1, "maximum": 7}},
            "required": ["city", "days"]}}}]
        r = self.think_first(8, max_tokens=300, tools=tools, tool_choice="required",
                             parallel_tool_calls=False)
        c = r.choices[0]
        self.assertEqual(c.finish_reason, "tool_calls", c.message)
        call = c.message.tool_calls[0]
        self.assertEqual(call.function.name, "get_weather")
        jsonschema.validate(json.loads(call.function.arguments), tools[0]["function"]["parameters"])
        self.assertTrue(c.message.reasoning_content)


if __name__ == "__main__":
    if len(sys.argv) in (4, 5, 6) and sys.argv[1] == "--make-model":
        make_model(*sys.argv[2:])
    else:
        unittest.main()
