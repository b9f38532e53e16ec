// Drives the chat page of a running `hearth serve` (started with an API key) in headless
// Chromium: the key dialog, markdown rendering of untrusted text, a streamed answer, Stop,
// conversations kept across a reload, a narrow screen; and throughout, no console error
// and no request to any other address. Ends with a screenshot.
//
//   node tests/web/test_page.mjs --url http://127.0.0.1:PORT --key KEY --screenshot OUT.png
//       [--chromium /usr/bin/chromium]
//
// scripts/test-web.sh starts the server and runs this.

import { mkdtempSync, rmSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import puppeteer from "puppeteer-core";

const { values: opts } = parseArgs({
  options: {
    url: { type: "string" },
    key: { type: "string" },
    screenshot: { type: "string" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
  },
});
if (!opts.url || !opts.key || !opts.screenshot) {
  console.error("usage: test_page.mjs --url URL --key KEY --screenshot OUT.png [--chromium PATH]");
  process.exit(2);
}
const origin = new URL(opts.url).origin;
const page_url = `${origin}/`;

// ---------------------------------------------------------------------------------------
// A minimal runner: checks run in order (later ones build on earlier ones' state), the
// first failure ends the run.

const checks = [];
const check = (name, fn) => checks.push({ name, fn });

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` in the page until it returns something truthy; returns that. */
async function waitFor(page, what, fn, arg, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await page.evaluate(fn, arg);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

function getWithHost(path, host) {
  const u = new URL(origin);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ hostname: u.hostname, port: u.port, path, headers: { Host: host } }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode));
    });
    req.on("error", reject);
    req.end();
  });
}

// ---------------------------------------------------------------------------------------
// What the page does, seen from outside: console errors and every request it makes.

const consoleErrors = [];
const outside = [];
let phase = "key";
let longAnswer = false;
/** A server-sent event stream to answer the next chat request with, instead of the model. */
let canned = null;

function watch(page) {
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    // The key dialog's phase is where the server answers 401 on purpose (no key, then a
    // wrong one); Chromium logs each refused request.
    if (phase === "key" && / status of 401 /.test(msg.text())) return;
    consoleErrors.push(`${msg.text()} (${msg.location()?.url ?? "?"})`);
  });
  page.on("pageerror", (e) => consoleErrors.push(`uncaught: ${e.message}`));
  page.on("request", (req) => {
    const url = new URL(req.url());
    if (url.origin !== origin) {
      outside.push(req.url());
      req.abort();
      return;
    }
    if (canned && url.pathname === "/v1/chat/completions") {
      req.respond({ status: 200, contentType: "text/event-stream", body: canned });
      canned = null;
      return;
    }
    if (longAnswer && url.pathname === "/v1/chat/completions") {
      // The default model is a base model that rarely stops early, but Stop is tested on
      // an answer that cannot end on its own before it is stopped.
      const body = JSON.parse(req.postData());
      req.continue({ postData: JSON.stringify({ ...body, ignore_eos: true }) });
      return;
    }
    req.continue();
  });
}

const answerText = () => document.querySelector(".msg.assistant:last-child .answer")?.textContent ?? "";
const idle = () => !document.getElementById("prompt").disabled && document.getElementById("stop").hidden;

async function setMaxTokens(page, n) {
  await page.click("#open-settings");
  await page.waitForSelector("#settings-dialog[open]");
  await page.$eval("#max-tokens", (e) => (e.value = ""));
  await page.type("#max-tokens", String(n));
  await page.click("#settings-save");
  await waitFor(page, "the settings dialog to close", () => !document.getElementById("settings-dialog").open);
}

// ---------------------------------------------------------------------------------------
// The checks.

check("the page and its files are served with their types and security headers", async () => {
  const page = await fetch(page_url);
  assert(page.status === 200, `GET / answered ${page.status} (the page needs no key)`);
  assert(page.headers.get("content-type") === "text/html; charset=utf-8", page.headers.get("content-type"));
  const csp = page.headers.get("content-security-policy") ?? "";
  // Trusted Types with no policy: no string can reach innerHTML, whatever the script does.
  for (const part of ["default-src 'self'", "require-trusted-types-for 'script'", "trusted-types 'none'"]) {
    assert(csp.includes(part), `CSP without ${part}: ${csp}`);
  }
  assert(!csp.includes("unsafe-"), `CSP: ${csp}`);
  assert(page.headers.get("x-content-type-options") === "nosniff", "no nosniff");
  for (const [path, type] of [
    ["/app.js", "text/javascript; charset=utf-8"],
    ["/app.css", "text/css; charset=utf-8"],
    ["/icon.svg", "image/svg+xml"],
  ]) {
    const r = await fetch(origin + path);
    assert(r.status === 200 && r.headers.get("content-type") === type, `${path}: ${r.status} ${r.headers.get("content-type")}`);
    const again = await fetch(origin + path, { headers: { "If-None-Match": r.headers.get("etag") } });
    assert(again.status === 304, `${path} revalidated: ${again.status}`);
  }
});

check("the page is refused under a foreign Host name (DNS rebinding)", async () => {
  const status = await getWithHost("/", "evil.example");
  assert(status === 403, `Host: evil.example got ${status}`);
});

let browser;
let page;
let userDataDir;

check("the key dialog asks for the key, refuses a wrong one, and keeps the right one", async () => {
  userDataDir = mkdtempSync(join(tmpdir(), "hearth-web-"));
  browser = await puppeteer.launch({
    executablePath: opts.chromium,
    headless: true,
    userDataDir,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  page = await browser.newPage();
  await page.setViewport({ width: 1200, height: 800 });
  await page.setRequestInterception(true);
  watch(page);
  await page.goto(page_url, { waitUntil: "load" });
  await page.waitForSelector("#key-dialog[open]", { timeout: 15000 });
  await page.type("#key-input", "not-the-key");
  await page.keyboard.press("Enter");
  await waitFor(page, "the wrong key to be refused", () => {
    const e = document.getElementById("key-error");
    return document.getElementById("key-dialog").open && !e.hidden && e.textContent.includes("refused");
  });
  await page.$eval("#key-input", (e) => (e.value = ""));
  await page.type("#key-input", opts.key);
  await page.keyboard.press("Enter");
  const model = await waitFor(page, "the model list", () => {
    const select = document.getElementById("model");
    return !document.getElementById("key-dialog").open && select.options.length > 0 && select.value;
  });
  assert(model.length > 0, "no model");
  const stored = await page.evaluate(() => JSON.parse(localStorage.getItem("hearth.apiKey")));
  assert(stored === opts.key, "the key is not in localStorage");
  phase = "chat";
});

const FIXTURE = {
  id: "fixture",
  title: "Markdown",
  created: 1,
  updated: 1,
  messages: [
    { role: "user", content: "Show me markdown <b>please</b>" },
    {
      role: "assistant",
      reasoning: "First I think <i>hard</i>.",
      thinkingSeconds: 1.5,
      content: [
        "## Heading *two*",
        "Some **bold**, *italic*, `inline <code>` and a [safe link](https://example.com/a?b=1).",
        '<script>window.__pwned = 1</script> <img src=x onerror="window.__pwned = 2">',
        "[bad](javascript:alert(1)), [data](data:text/html,hi) and snake_case_word.",
        "",
        "- one",
        "- two",
        "  - nested",
        "",
        "1. first",
        "2. second",
        "",
        "> quoted",
        "",
        "```js",
        'const x = "<b>not bold</b>";',
        "```",
      ].join("\n"),
    },
  ],
};

check("markdown renders as elements, and markup in the model's text stays text", async () => {
  await page.evaluate((c) => {
    localStorage.setItem("hearth.conversations", JSON.stringify([c]));
    localStorage.setItem("hearth.current", JSON.stringify(c.id));
  }, FIXTURE);
  await page.reload({ waitUntil: "load" });
  await page.waitForSelector(".msg.assistant .answer h2");
  const r = await page.$eval(".msg.assistant", (m) => {
    const a = m.querySelector(".answer");
    const details = m.querySelector("details.thinking");
    return {
      h2: a.querySelector("h2")?.textContent,
      h2em: a.querySelector("h2 em")?.textContent,
      strong: a.querySelector("p strong")?.textContent,
      em: [...a.querySelectorAll("p em")].map((e) => e.textContent),
      inlineCode: a.querySelector("p code")?.textContent,
      links: [...a.querySelectorAll("a")].map((e) => [e.textContent, e.href, e.rel]),
      injected: a.querySelectorAll("script, img, iframe, b, i, [onerror]").length,
      text: a.textContent,
      bullets: a.querySelectorAll("ul > li").length,
      nested: a.querySelector("ul > li > ul > li")?.textContent,
      numbered: [...a.querySelectorAll("ol > li")].map((e) => e.textContent),
      quote: a.querySelector("blockquote")?.textContent,
      codeLang: a.querySelector(".codeblock .lang")?.textContent,
      code: a.querySelector(".codeblock pre code")?.textContent,
      pwned: window.__pwned,
      thinkingOpen: details?.open,
      thinkingHidden: details?.hidden,
      thinking: details?.querySelector(".thinking-text")?.textContent,
      user: document.querySelector(".msg.user .bubble")?.textContent,
    };
  });
  const expect = (what, got, want) => assert(JSON.stringify(got) === JSON.stringify(want), `${what}: ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
  expect("heading", [r.h2, r.h2em], ["Heading two", "two"]);
  expect("bold, italic, inline code", [r.strong, r.em, r.inlineCode], ["bold", ["italic"], "inline <code>"]);
  expect("links (http and https only)", r.links, [["safe link", "https://example.com/a?b=1", "noopener noreferrer"]]);
  expect("elements from the model's markup", r.injected, 0);
  expect("script run", r.pwned, undefined);
  assert(r.text.includes('<script>window.__pwned = 1</script> <img src=x onerror="window.__pwned = 2">'), `markup not kept as text: ${r.text}`);
  // A link to another scheme keeps its label, as text.
  assert(r.text.includes("bad, data and snake_case_word."), `text: ${r.text}`);
  expect("lists", [r.bullets, r.nested, r.numbered], [3, "nested", ["first", "second"]]);
  expect("quote", r.quote, "quoted");
  expect("code block", [r.codeLang, r.code], ["js", 'const x = "<b>not bold</b>";']);
  expect("thinking, apart and closed", [r.thinkingHidden, r.thinkingOpen, r.thinking], [false, false, "First I think <i>hard</i>."]);
  assert(!r.text.includes("First I think"), "the thinking is in the answer");
  expect("user text", r.user, "Show me markdown <b>please</b>");

  // Deleted from the list: the page is back to its empty state.
  await page.click(".conversation.active .delete");
  await waitFor(page, "the deletion", () => document.querySelectorAll(".conversation").length === 0 && document.getElementById("empty")?.isConnected);
  const left = await page.evaluate(() => JSON.parse(localStorage.getItem("hearth.conversations")));
  expect("stored after the deletion", left, []);
});

check("a reasoning model's thinking goes into its own collapsible block", async () => {
  // The default model does not think: this stream is shaped as the server sends a
  // reasoning model's (crates/server/tests/router.rs checks the server's side).
  const chunk = (delta, finish = null) =>
    `data: ${JSON.stringify({ object: "chat.completion.chunk", choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
  canned = [
    chunk({ role: "assistant", content: "" }),
    chunk({ reasoning_content: "2 and 2 " }),
    chunk({ reasoning_content: "make <b>4</b>." }),
    chunk({ content: "**Four**" }),
    chunk({ content: "." }),
    chunk({}, "stop"),
    `data: ${JSON.stringify({ object: "chat.completion.chunk", choices: [], usage: { completion_tokens: 9 } })}\n\n`,
    "data: [DONE]\n\n",
  ].join("");
  await page.type("#prompt", "What is 2+2?");
  await page.keyboard.press("Enter");
  await waitFor(page, "the canned answer", () => !document.getElementById("prompt").disabled && document.querySelector(".msg.assistant .answer strong"));
  const r = await page.$eval(".msg.assistant", (m) => ({
    hidden: m.querySelector("details.thinking").hidden,
    open: m.querySelector("details.thinking").open,
    thinking: m.querySelector(".thinking-text").textContent,
    summary: m.querySelector("summary").textContent,
    answer: m.querySelector(".answer").innerText,
    bold: m.querySelector(".answer strong")?.textContent,
    error: m.querySelector(".error-box").hidden ? "" : m.querySelector(".error-box").textContent,
  }));
  assert(!r.hidden && !r.open && r.summary.startsWith("Thought for"), `thinking block: ${JSON.stringify(r)}`);
  assert(r.thinking === "2 and 2 make <b>4</b>.", `thinking: ${r.thinking}`);
  assert(r.answer === "Four." && r.bold === "Four" && r.error === "", `answer: ${JSON.stringify(r)}`);
  await page.click(".conversation.active .delete");
  await waitFor(page, "the deletion", () => document.querySelectorAll(".conversation").length === 0);
});

let firstAnswer = "";

check("Shift+Enter adds a line; Enter sends, and the answer streams in", async () => {
  await setMaxTokens(page, 60);
  await page.click("#prompt");
  await page.type("#prompt", "Write a short poem about a warm fire.");
  await page.keyboard.down("Shift");
  await page.keyboard.press("Enter");
  await page.keyboard.up("Shift");
  await page.type("#prompt", "Keep it cosy.");
  const value = await page.$eval("#prompt", (e) => e.value);
  assert(value === "Write a short poem about a warm fire.\nKeep it cosy.", `prompt: ${JSON.stringify(value)}`);
  assert((await page.$$(".msg")).length === 0, "Shift+Enter sent the message");
  // Every length the answer shows, recorded in the page as it changes.
  await page.evaluate(() => {
    window.__lengths = [];
    const box = document.getElementById("messages");
    new MutationObserver(() => {
      const a = box.querySelector(".msg.assistant:last-child .answer");
      const n = a ? a.textContent.length : 0;
      if (window.__lengths.at(-1) !== n) window.__lengths.push(n);
    }).observe(box, { subtree: true, childList: true, characterData: true });
  });
  await page.keyboard.press("Enter");
  await waitFor(page, "the answer to start", () => document.getElementById("prompt").disabled);
  await waitFor(page, "the answer to finish", idle, undefined, 120000);
  const lengths = await page.evaluate(() => window.__lengths.filter((n) => n > 0));
  assert(new Set(lengths).size >= 2, `the answer did not stream: lengths seen ${JSON.stringify(lengths)}`);
  firstAnswer = await page.evaluate(answerText);
  assert(firstAnswer.trim().length > 0, "an empty answer");
  const meta = await page.$eval(".msg.assistant:last-child .meta", (e) => e.textContent);
  assert(/\d+ tokens/.test(meta), `meta: ${meta}`);
  const error = await page.$eval(".msg.assistant:last-child .error-box", (e) => (e.hidden ? "" : e.textContent));
  assert(error === "", `error: ${error}`);
});

let partial = "";

check("Stop ends a long answer, keeps what had arrived and gives the input back", async () => {
  await setMaxTokens(page, 1500);
  longAnswer = true;
  await page.type("#prompt", "Tell me a long story about a lighthouse keeper.");
  await page.keyboard.press("Enter");
  await waitFor(page, "some of the answer", () =>
    !document.getElementById("stop").hidden &&
    (document.querySelector(".msg.assistant:last-child .answer")?.textContent.length ?? 0) > 200,
  undefined, 60000);
  longAnswer = false;
  await page.click("#stop");
  await waitFor(page, "the input to come back", idle, undefined, 5000);
  partial = await page.evaluate(answerText);
  assert(partial.length > 200, `partial answer: ${JSON.stringify(partial)}`);
  // The server saw the connection close and stopped generating.
  const deadline = Date.now() + 5000;
  for (;;) {
    const metrics = await (await fetch(`${origin}/metrics`)).text();
    if (/^hearth_requests_running 0$/m.test(metrics)) break;
    assert(Date.now() < deadline, `the server still generates after Stop:\n${metrics.match(/^hearth_requests_running .*$/m)}`);
    await sleep(50);
  }
  await sleep(1000);
  const later = await page.evaluate(answerText);
  assert(later === partial, "the answer kept growing after Stop");
  const meta = await page.$eval(".msg.assistant:last-child .meta", (e) => e.textContent);
  assert(meta.includes("stopped"), `meta: ${meta}`);
  const focused = await page.evaluate(() => document.activeElement?.id);
  assert(focused === "prompt", `focus is on ${focused}`);
});

check("the conversation is still there after a reload, and can be switched to", async () => {
  await page.reload({ waitUntil: "load" });
  await page.waitForSelector(".msg.assistant");
  const titles = await page.$$eval(".conversation .open", (b) => b.map((e) => e.textContent));
  assert(titles.length === 1 && titles[0].startsWith("Write a short poem"), `conversations: ${JSON.stringify(titles)}`);
  const answers = await page.$$eval(".msg.assistant .answer", (a) => a.map((e) => e.textContent));
  assert(answers.length === 2 && answers[0] === firstAnswer && answers[1] === partial, `answers after reload: ${JSON.stringify(answers)}`);
  await page.click("#new-chat");
  await waitFor(page, "an empty conversation", () => document.getElementById("empty")?.isConnected);
  await page.click(".conversation .open");
  await waitFor(page, "the conversation again", () => document.querySelectorAll(".msg").length === 4);
});

check("on a narrow screen the list slides in from a button", async () => {
  await page.setViewport({ width: 390, height: 780 });
  await waitFor(page, "the list to leave the narrow screen", () => document.getElementById("sidebar").getBoundingClientRect().right <= 0, undefined, 2000);
  const toggle = await page.$eval("#toggle-sidebar", (b) => getComputedStyle(b).display);
  assert(toggle !== "none", "no button for the list");
  await page.click("#toggle-sidebar");
  await waitFor(page, "the list to slide in", () => document.getElementById("sidebar").getBoundingClientRect().left >= 0);
  await page.click("#scrim", { offset: { x: 370, y: 400 } });
  await waitFor(page, "the list to slide out", () => document.getElementById("sidebar").getBoundingClientRect().right <= 0);
  await page.setViewport({ width: 1200, height: 800 });
});

check("no console errors, and no request left the server's origin", async () => {
  assert(consoleErrors.length === 0, `console errors:\n  ${consoleErrors.join("\n  ")}`);
  assert(outside.length === 0, `requests elsewhere:\n  ${outside.join("\n  ")}`);
  await page.evaluate(() => document.getElementById("messages").scrollTo(0, 0));
  await page.screenshot({ path: opts.screenshot, type: "png" });
});

let passed = 0;
let failed = 0;
try {
  for (const { name, fn } of checks) {
    try {
      await fn();
      passed++;
      console.log(`ok - ${name}`);
    } catch (e) {
      failed++;
      console.log(`FAIL - ${name}\n  ${e.stack ?? e}`);
      break;
    }
  }
} finally {
  await browser?.close();
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
}
const skipped = checks.length - passed - failed;
console.log(`web: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
process.exit(failed ? 1 : 0);
