"""`hearth chat` on a real terminal: driven through tmux as a person would type.

Two turns, the second reusing the first's keys and values (shown by /stats: prompt tokens
from the cache); Ctrl-C stops an answer and the REPL goes on; /save, /clear and /load
restore the conversation; multi-line input; the history file; Ctrl-D quits with status 0.

Usage: test_chat.py HEARTH_BIN MODEL (tmux must be installed; scripts/test-chat.sh runs it).
"""

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import unittest

BIN, MODEL = sys.argv[1], sys.argv[2]
SESSION = f"hearth-chat-test-{os.getpid()}"
# The prompt rustyline prints (bold on a terminal: matched without escapes by capture-pane).
PROMPT = ">>> "


def tmux(*args, check=True):
    return subprocess.run(["tmux", *args], check=check, capture_output=True, text=True).stdout


def screen():
    """The whole pane with its scrollback, wrapped lines joined, without the empty rows
    below the cursor."""
    return tmux("capture-pane", "-p", "-J", "-S", "-5000", "-t", SESSION).rstrip()


def wait_for(predicate, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = screen()
        if predicate(text):
            return text
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; the screen:\n{screen()}")


def prompts(text):
    return sum(1 for line in text.splitlines() if line.startswith(PROMPT.rstrip()))


def type_line(text):
    """Types a line and presses Enter (literally: no tmux key names inside the text)."""
    tmux("send-keys", "-t", SESSION, "-l", text)
    tmux("send-keys", "-t", SESSION, "Enter")


def command(text, expect, timeout=30.0):
    """Types a command and waits for `expect` (a regex) to appear after it."""
    before = screen()
    type_line(text)
    n = len(before.splitlines())

    def seen(s):
        return re.search(expect, "\n".join(s.splitlines()[max(n - 1, 0):])) is not None

    return wait_for(seen, f"{expect!r} after {text!r}", timeout)


def answer(text, timeout=120.0):
    """Sends a message and waits until the answer has ended (the next prompt shows)."""
    n = prompts(screen())
    type_line(text)
    return wait_for(lambda s: prompts(s) > n, f"the answer to {text!r}", timeout)


def last_stats(text):
    """The figures of the last /stats on the screen."""
    found = re.findall(r"last answer: prompt (\d+) tokens, (\d+) from the cache, (\d+) computed", text)
    assert found, text
    prompt, cached, computed = map(int, found[-1])
    generated = re.findall(r"(\d+) tokens generated", text)
    return prompt, cached, computed, int(generated[-1])


class ChatTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="hearth-chat-")
        cls.history = os.path.join(cls.dir, "history")
        cls.status = os.path.join(cls.dir, "status")
        # The exit status is written when the command ends, for the Ctrl-D test.
        cmd = (
            f"{shlex.quote(BIN)} chat {shlex.quote(MODEL)} -t 2 --seed 7 -n 40 "
            f"--history {shlex.quote(cls.history)}; echo $? > {shlex.quote(cls.status)}; sleep 600"
        )
        tmux("kill-session", "-t", SESSION, check=False)
        tmux("new-session", "-d", "-s", SESSION, "-x", "160", "-y", "50",
             "-e", "TERM=xterm-256color", "bash", "--norc", "--noprofile", "-c", cmd)
        wait_for(lambda s: "ready" in s and prompts(s) >= 1, "the model to load", 120)

    @classmethod
    def tearDownClass(cls):
        tmux("kill-session", "-t", SESSION, check=False)

    def test_1_two_turns_reuse_the_cache(self):
        answer("Write a sentence about the sea.")
        s = command("/stats", r"settings:")
        p1, cached1, _, gen1 = last_stats(s)
        self.assertEqual(cached1, 0, "the first turn has nothing to reuse")
        answer("Now one about mountains.")
        s = command("/stats", r"settings:")
        p2, cached2, computed2, _ = last_stats(s)
        print(f"turn 1: {p1} prompt tokens, {gen1} generated; turn 2: {p2} prompt tokens, "
              f"{cached2} from the cache, {computed2} computed")
        self.assertGreater(p2, p1)
        # The engine caches whole blocks of 16 tokens: every full block of the first turn's
        # prompt and answer is found again.
        self.assertGreaterEqual(cached2, (p1 + gen1) // 16 * 16 - 16)
        self.assertGreater(cached2, 0)
        self.assertEqual(cached2 + computed2, p2)
        self.assertIn("2 turns", s)

    def test_2_ctrl_c_stops_an_answer_and_the_repl_goes_on(self):
        command("/set max_tokens 2000", r"max_tokens 2000")
        n = prompts(screen())
        before = len(screen())
        type_line("Tell me a very long story about a lighthouse keeper.")
        # Wait until the answer has started to stream, then interrupt it.
        wait_for(lambda s: len(s) > before + 120, "the answer to stream", 60)
        t0 = time.monotonic()
        tmux("send-keys", "-t", SESSION, "C-c")
        s = wait_for(lambda s: "[stopped]" in s and prompts(s) > n, "the answer to stop", 10)
        print(f"stopped {time.monotonic() - t0:.2f} s after Ctrl-C")
        self.assertLess(time.monotonic() - t0, 5)
        s = command("/stats", r"settings:")
        self.assertIn("3 turns", s)
        command("/set max_tokens 40", r"max_tokens 40")

    def test_3_save_clear_load(self):
        saved = os.path.join(self.dir, "conversation.json")
        again = os.path.join(self.dir, "again.json")
        command(f"/save {saved}", r"saved \d+ messages")
        with open(saved) as f:
            before = json.load(f)
        self.assertEqual(len(before["messages"]), 6)
        self.assertEqual(before["messages"][0], {"role": "user", "content": "Write a sentence about the sea."})
        command("/clear", r"conversation cleared")
        command(f"/save {again}", r"saved 0 messages")
        command(f"/load {saved}", r"loaded 6 messages")
        command(f"/save {again}", r"saved 6 messages")
        with open(again) as f:
            self.assertEqual(json.load(f), before)
        # The restored conversation goes on: its tokens are still in the cache.
        answer("One more, about rivers.")
        _, cached, _, _ = last_stats(command("/stats", r"settings:"))
        self.assertGreater(cached, 0)
        command("/load /nonexistent/file.json", r"cannot read /nonexistent/file.json")
        command("/bogus", r"unknown command /bogus")

    def test_4_multi_line_input(self):
        n = prompts(screen())
        tmux("send-keys", "-t", SESSION, "-l", "first line \\")
        tmux("send-keys", "-t", SESSION, "Enter")
        tmux("send-keys", "-t", SESSION, "-l", "second line")
        tmux("send-keys", "-t", SESSION, "Enter")
        wait_for(lambda s: prompts(s) > n, "the multi-line answer")
        saved = os.path.join(self.dir, "multi.json")
        command(f"/save {saved}", r"saved \d+ messages")
        with open(saved) as f:
            users = [m["content"] for m in json.load(f)["messages"] if m["role"] == "user"]
        self.assertEqual(users[-1], "first line \nsecond line")

    def test_5_ctrl_d_quits_and_keeps_the_history(self):
        tmux("send-keys", "-t", SESSION, "C-d")
        deadline = time.monotonic() + 20
        while not os.path.exists(self.status) and time.monotonic() < deadline:
            time.sleep(0.1)
        with open(self.status) as f:
            self.assertEqual(f.read().strip(), "0")
        with open(self.history) as f:
            history = f.read()
        self.assertIn("Now one about mountains.", history)
        self.assertIn("/stats", history)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
