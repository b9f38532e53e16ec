#!/usr/bin/env python3
"""llama.cpp's numbers for the CLI tests on the default model (gemma-3-270m Q4_K_M),
through llama-cpp-python (the version scripts/python-env.sh installs).

Writes crates/cli/tests/run_reference.json:

* "greedy": the greedy continuation of "The capital of France is" (BOS added, special
  text parsed, as llama-cli tokenizes a prompt): token ids and text, 32 tokens, and the
  margin between the two largest logits at each step (where a close margin makes a
  divergence of a few hundredths of a logit plausible);
* "chat_greedy": the same for the prompt wrapped in Gemma's chat template;
* "perplexity": llama-perplexity's procedure (tools/perplexity/perplexity.cpp) on
  tests/fixtures/fidelity/corpus.txt with n_ctx = 128, the first 4 chunks: tokenize with
  BOS, chunks of n_ctx tokens with the first replaced by BOS, score positions
  n_ctx/2 .. n_ctx-2; the running PPL after each chunk.

Run: python3 crates/cli/tests/run_reference.py [MODEL]
"""
import json
import os
import sys

import numpy as np
import llama_cpp

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
MODEL = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser(
    "~/.cache/hearth/models/gemma-3-270m-q4_k_m.gguf"
)


def greedy(llm, prompt: bytes, n: int):
    toks = llm.tokenize(prompt, add_bos=True, special=True)
    llm.reset()
    llm.eval(toks)
    out, margins = [], []
    for _ in range(n):
        lg = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
        order = np.argsort(-lg, kind="stable")
        t = int(order[0])
        if llm.token_eos() == t:
            break
        out.append(t)
        margins.append(round(float(lg[order[0]] - lg[order[1]]), 4))
        llm.eval([t])
    return {
        "prompt_tokens": toks,
        "tokens": out,
        "text": llm.detokenize(out).decode("utf-8", errors="replace"),
        "top2_margins": margins,
    }


def perplexity(llm, text: str, n_ctx: int, n_chunks: int):
    toks = llm.tokenize(text.encode(), add_bos=True, special=False)
    first = n_ctx // 2
    nll, count, running = 0.0, 0, []
    for c in range(n_chunks):
        chunk = list(toks[c * n_ctx : (c + 1) * n_ctx])
        chunk[0] = llm.token_bos()
        llm.reset()
        llm.eval(chunk)
        for p in range(first, n_ctx - 1):
            lg = np.array(llm.scores[p], dtype=np.float64)
            m = lg.max()
            lse = m + np.log(np.exp(lg - m).sum())
            nll -= lg[toks[c * n_ctx + p + 1]] - lse
            count += 1
        running.append(round(float(np.exp(nll / count)), 4))
    return {"n_tokens": len(toks), "n_ctx": n_ctx, "running_ppl": running}


def main():
    llm = llama_cpp.Llama(MODEL, n_ctx=512, n_batch=512, logits_all=True, verbose=False)
    chat = (
        "<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    corpus = open(os.path.join(ROOT, "tests/fixtures/fidelity/corpus.txt")).read()
    ref = {
        "model": os.path.basename(MODEL),
        "llama_cpp_python": llama_cpp.__version__,
        "greedy": greedy(llm, b"The capital of France is", 32),
        "chat_greedy": greedy(llm, chat.encode(), 16),
        "perplexity": perplexity(llm, corpus, 128, 4),
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run_reference.json")
    with open(path, "w") as f:
        json.dump(ref, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(json.dumps(ref, ensure_ascii=False)[:2000])


if __name__ == "__main__":
    main()
