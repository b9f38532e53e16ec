// Hearth's chat page: streams answers from /v1/chat/completions, renders their markdown,
// and keeps conversations in this browser's localStorage.
//
// The model's output is untrusted text. It never goes through an HTML parser: the
// markdown renderer below builds elements and text nodes (textContent), so there is
// nothing to escape and nothing a model can inject. The server's Content-Security-Policy
// backs this up: no inline script, and Trusted Types with no policy, so assigning any
// string to innerHTML (or another HTML sink) throws instead of parsing it.
"use strict";

const STORE = {
  conversations: "hearth.conversations",
  current: "hearth.current",
  settings: "hearth.settings",
  key: "hearth.apiKey",
};

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

// ---------------------------------------------------------------------------------------
// Markdown → DOM. A small subset, the one chat models write: fenced code blocks, ATX
// headings, bullet and numbered lists (nested by indentation), block quotes, rules and
// paragraphs (a single newline is a line break, as chat users expect); inline code, bold,
// italic, links and bare URLs (http and https only; any other scheme stays text).

const FENCE_OPEN = /^( {0,3})(`{3,}|~{3,})[ \t]*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const LIST_ITEM = /^( {0,3})(?:([-*+])|(\d{1,9})[.)])(?:[ \t]+(.*))?$/;
const QUOTE = /^ {0,3}> ?(.*)$/;

/** Renders markdown `source` as a fragment of elements and text nodes. */
function renderMarkdown(source) {
  const fragment = document.createDocumentFragment();
  const lines = source
    .replace(/\r\n?/g, "\n")
    .split("\n")
    .map((l) => l.replace(/^[ \t]+/, (ws) => ws.replace(/\t/g, "    ")));
  renderBlocks(lines, fragment);
  return fragment;
}

function listItem(line) {
  const m = LIST_ITEM.exec(line);
  if (!m || RULE.test(line)) return null;
  const text = m[4] ?? "";
  // Where the item's text starts: continuation lines indented this far belong to it.
  const marker = m[1].length + (m[2] ?? m[3] + ".").length;
  const gap = m[4] === undefined ? 1 : line.length - marker - text.length;
  return {
    ordered: m[2] === undefined,
    start: m[3] === undefined ? 1 : Number(m[3]),
    indent: m[1].length,
    contentIndent: marker + Math.min(Math.max(gap, 1), 4),
    text,
  };
}

function startsBlock(line) {
  return FENCE_OPEN.test(line) || HEADING.test(line) || RULE.test(line) ||
    QUOTE.test(line) || listItem(line) !== null;
}

const indentOf = (line) => line.length - line.trimStart().length;
const blank = (line) => line.trim() === "";

function renderBlocks(lines, parent) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (blank(line)) {
      i++;
    } else if ((m = FENCE_OPEN.exec(line))) {
      const [, indent, fence, lang] = m;
      const close = new RegExp(`^ {0,3}${fence[0] === "`" ? "`" : "~"}{${fence.length},}[ \\t]*$`);
      const body = [];
      i++;
      // An unclosed fence (an answer still streaming) runs to the end.
      while (i < lines.length && !close.test(lines[i])) {
        body.push(lines[i].slice(Math.min(indent.length, indentOf(lines[i]))));
        i++;
      }
      i++;
      parent.append(codeBlock(body.join("\n"), lang));
    } else if ((m = HEADING.exec(line))) {
      const h = el(`h${m[1].length}`);
      renderInline(m[2], h);
      parent.append(h);
      i++;
    } else if (RULE.test(line)) {
      parent.append(el("hr"));
      i++;
    } else if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && !blank(lines[i])) {
        const q = QUOTE.exec(lines[i]);
        if (!q && startsBlock(lines[i])) break;
        inner.push(q ? q[1] : lines[i]);
        i++;
      }
      const quote = el("blockquote");
      renderBlocks(inner, quote);
      parent.append(quote);
    } else if (listItem(line)) {
      i = renderList(lines, i, parent);
    } else {
      const text = [line.trim()];
      i++;
      while (i < lines.length && !blank(lines[i]) && !startsBlock(lines[i])) {
        text.push(lines[i].trim());
        i++;
      }
      const p = el("p");
      renderInline(text.join("\n"), p);
      parent.append(p);
    }
  }
}

/** Renders the list that starts at `lines[i]`; returns the index after it. */
function renderList(lines, i, parent) {
  const first = listItem(lines[i]);
  const list = el(first.ordered ? "ol" : "ul");
  if (first.ordered && first.start !== 1) list.start = first.start;
  let loose = false;
  const items = [];
  while (i < lines.length) {
    const item = listItem(lines[i]);
    if (!item || item.ordered !== first.ordered) break;
    const body = [item.text];
    i++;
    while (i < lines.length) {
      const line = lines[i];
      if (blank(line)) {
        // A blank line continues the item only if the next text is indented under it.
        let j = i + 1;
        while (j < lines.length && blank(lines[j])) j++;
        if (j < lines.length && indentOf(lines[j]) >= item.contentIndent) {
          for (; i < j; i++) body.push("");
          loose = true;
          continue;
        }
        break;
      }
      if (indentOf(line) >= item.contentIndent) {
        body.push(line.slice(item.contentIndent));
      } else if (startsBlock(line)) {
        break;
      } else {
        body.push(line); // a paragraph's lazy continuation
      }
      i++;
    }
    items.push(body);
    // Blank lines between items keep the list going (and make it loose).
    let j = i;
    while (j < lines.length && blank(lines[j])) j++;
    const next = j < lines.length ? listItem(lines[j]) : null;
    if (j > i && next && next.ordered === first.ordered && next.indent <= first.indent + 1) {
      loose = true;
      i = j;
    }
  }
  for (const body of items) {
    const li = el("li");
    renderBlocks(body, li);
    if (!loose) {
      // A tight list's items hold their text directly, not in paragraphs.
      for (const p of [...li.children].filter((c) => c.tagName === "P")) p.replaceWith(...p.childNodes);
    }
    list.append(li);
  }
  parent.append(list);
  return i;
}

function codeBlock(code, lang) {
  const block = el("div", "codeblock");
  const head = el("div", "codeblock-head");
  head.append(el("span", "lang", lang.slice(0, 24) || "text"));
  const copy = el("button", "copy", "Copy");
  copy.type = "button";
  copy.setAttribute("aria-label", "Copy code");
  head.append(copy);
  const pre = el("pre");
  pre.append(el("code", "", code));
  block.append(head, pre);
  return block;
}

const ESCAPABLE = /[\\`*_{}[\]()#+\-.!>~|<]/;
const LINK = /\[([^\]\n]+)\]\(\s*<?([^\s<>()]+(?:\([^\s<>()]*\))?)>?(?:\s+"[^"\n]*")?\s*\)/y;
const BARE_URL = /https?:\/\/[^\s<>"'`]*[^\s<>"'`.,:;!?)\]}*_]/iy;

/** Appends the inline markdown of `text` to `parent`, as elements and text nodes. */
function renderInline(text, parent) {
  let plain = "";
  const flush = () => {
    const lines = plain.split("\n");
    lines.forEach((line, n) => {
      if (n > 0) parent.append(el("br"));
      if (line) parent.append(document.createTextNode(line));
    });
    plain = "";
  };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "\\" && ESCAPABLE.test(text[i + 1] ?? "")) {
      plain += text[i + 1];
      i += 2;
      continue;
    }
    if (c === "`") {
      const run = /`+/y;
      run.lastIndex = i;
      const ticks = run.exec(text)[0];
      const close = findRun(text, ticks, i + ticks.length);
      if (close !== -1) {
        flush();
        let code = text.slice(i + ticks.length, close).replace(/\n/g, " ");
        if (/^ .*[^ ].* $/.test(code)) code = code.slice(1, -1);
        parent.append(el("code", "", code));
        i = close + ticks.length;
      } else {
        plain += ticks;
        i += ticks.length;
      }
      continue;
    }
    if (c === "*" || c === "_") {
      const marker = text[i + 1] === c ? c + c : c;
      const close = canOpen(text, i, marker) ? findClose(text, i + marker.length, marker) : -1;
      if (close !== -1) {
        flush();
        const e = el(marker.length === 2 ? "strong" : "em");
        renderInline(text.slice(i + marker.length, close), e);
        parent.append(e);
        i = close + marker.length;
      } else {
        plain += marker;
        i += marker.length;
      }
      continue;
    }
    if (c === "[") {
      LINK.lastIndex = i;
      const m = LINK.exec(text);
      if (m) {
        flush();
        appendLink(parent, m[1], m[2]);
        i += m[0].length;
        continue;
      }
    }
    if ((c === "h" || c === "H") && (i === 0 || /[\s(]/.test(text[i - 1]))) {
      BARE_URL.lastIndex = i;
      const m = BARE_URL.exec(text);
      if (m) {
        flush();
        appendLink(parent, null, m[0]);
        i += m[0].length;
        continue;
      }
    }
    plain += c;
    i++;
  }
  flush();
}

/** The index of the next run of exactly `ticks` at or after `from`, or -1. */
function findRun(text, ticks, from) {
  for (let j = text.indexOf(ticks, from); j !== -1; j = text.indexOf(ticks, j + 1)) {
    const longer = text[j + ticks.length] === "`" || text[j - 1] === "`";
    if (!longer) return j;
  }
  return -1;
}

function canOpen(text, i, marker) {
  const after = text[i + marker.length];
  if (after === undefined || /\s/.test(after)) return false;
  // `_` inside a word (snake_case) is a letter, not emphasis.
  return marker[0] !== "_" || i === 0 || !/[\p{L}\p{N}]/u.test(text[i - 1]);
}

function findClose(text, from, marker) {
  for (let j = from + 1; j + marker.length <= text.length; j++) {
    if (!text.startsWith(marker, j) || /\s/.test(text[j - 1])) continue;
    // A single `*` looks past `**` (bold inside italic), and `**` past a lone `*`.
    if (marker.length === 1 && (text[j + 1] === marker || text[j - 1] === marker)) continue;
    if (marker[0] === "_" && /[\p{L}\p{N}]/u.test(text[j + marker.length] ?? "")) continue;
    return j;
  }
  return -1;
}

function appendLink(parent, label, href) {
  let url = null;
  try {
    url = new URL(href);
  } catch {
    // Not an absolute URL: shown as text.
  }
  if (!url || (url.protocol !== "http:" && url.protocol !== "https:")) {
    if (label === null) parent.append(document.createTextNode(href));
    else renderInline(label, parent);
    return;
  }
  const a = el("a");
  a.href = url.href;
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  if (label === null) a.textContent = href;
  else renderInline(label, a);
  parent.append(a);
}

// ---------------------------------------------------------------------------------------
// Storage: conversations, settings and the key live in localStorage.

function load(key, fallback) {
  try {
    const v = localStorage.getItem(key);
    return v === null ? fallback : JSON.parse(v);
  } catch {
    return fallback;
  }
}

function store(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
    return true;
  } catch {
    setStatus("This browser's storage is full: the conversation is not saved.", true);
    return false;
  }
}

const state = {
  conversations: load(STORE.conversations, []).filter((c) => c && Array.isArray(c.messages)),
  currentId: load(STORE.current, null),
  settings: { system: "", temperature: "", top_p: "", max_tokens: "", model: "", ...load(STORE.settings, {}) },
  key: load(STORE.key, ""),
  /** The generation in progress: { controller, conversation, reply }. */
  streaming: null,
};

function saveConversations() {
  store(STORE.conversations, state.conversations);
  store(STORE.current, state.currentId);
}

function current() {
  return state.conversations.find((c) => c.id === state.currentId) ?? null;
}

function newId() {
  return Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
}

function titleOf(text) {
  const line = text.trim().split("\n")[0];
  return line.length > 48 ? `${line.slice(0, 47)}…` : line || "New chat";
}

// ---------------------------------------------------------------------------------------
// The API.

function headers(extra) {
  const h = { ...extra };
  if (state.key) h.Authorization = `Bearer ${state.key}`;
  return h;
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (body?.error?.message) return body.error.message;
  } catch {
    // Not JSON: the status says enough.
  }
  return `the server answered ${response.status} ${response.statusText}`;
}

/** fetch(), asking for a key and trying again while the server answers 401. */
async function fetchWithKey(path, init) {
  let refused = false;
  for (;;) {
    const response = await fetch(path, { ...init, headers: headers(init?.headers) });
    if (response.status !== 401) return response;
    const message = await errorText(response);
    const key = await askForKey(refused || state.key ? `The server refused the key: ${message}` : "");
    if (key === null) {
      // Dismissed: the caller sees the 401 (its body was read above, so it is rebuilt).
      return new Response(JSON.stringify({ error: { message } }), { status: 401 });
    }
    refused = true;
  }
}

/**
 * Reads a server-sent event stream, calling `onData` with each `data:` payload parsed as
 * JSON. Returns true when the stream ended with `data: [DONE]`.
 */
async function readEvents(body, onData) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const boundary = /\r?\n\r?\n/;
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer += decoder.decode(value, { stream: true });
    let m;
    while ((m = boundary.exec(buffer))) {
      const event = buffer.slice(0, m.index);
      buffer = buffer.slice(m.index + m[0].length);
      const data = event
        .split(/\r?\n/)
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(l.startsWith("data: ") ? 6 : 5))
        .join("\n");
      if (data === "") continue;
      if (data === "[DONE]") return true;
      onData(JSON.parse(data));
    }
  }
}

async function loadModels() {
  const select = $("model");
  for (;;) {
    let response;
    try {
      response = await fetchWithKey("/v1/models");
    } catch {
      setStatus("Cannot reach the server; retrying…", true);
      await sleep(2000);
      continue;
    }
    if (response.status === 503) {
      setStatus("Loading the model…");
      await sleep(1000);
      continue;
    }
    if (!response.ok) {
      setStatus(await errorText(response), true);
      return;
    }
    const models = (await response.json()).data ?? [];
    select.replaceChildren(...models.map((m) => el("option", "", m.id)));
    if (models.some((m) => m.id === state.settings.model)) select.value = state.settings.model;
    const chosen = models.find((m) => m.id === select.value);
    setStatus(chosen?.meta?.n_ctx ? `${chosen.meta.n_ctx.toLocaleString()} tokens of context` : "");
    return;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------
// Generating an answer.

function requestBody(conversation, reply) {
  const s = state.settings;
  const messages = [];
  if (s.system.trim()) messages.push({ role: "system", content: s.system });
  for (const m of conversation.messages) {
    if (m === reply) break;
    // An answer that failed before any text is left out of the history.
    if (m.role === "assistant" && !m.content) continue;
    messages.push({ role: m.role, content: m.content });
  }
  const body = { messages, stream: true, stream_options: { include_usage: true } };
  if ($("model").value) body.model = $("model").value;
  if (s.temperature !== "") body.temperature = Number(s.temperature);
  if (s.top_p !== "") body.top_p = Number(s.top_p);
  if (s.max_tokens !== "") body.max_tokens = Number(s.max_tokens);
  return body;
}

async function generate(conversation, reply) {
  const controller = new AbortController();
  state.streaming = { controller, conversation, reply };
  setBusy(true);
  const view = messageView(reply);
  view.node.classList.add("streaming");
  const started = performance.now();
  let thinkingStarted = null;
  let lastSave = 0;
  const refresh = throttledRender(view);
  try {
    const response = await fetchWithKey("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(requestBody(conversation, reply)),
      signal: controller.signal,
    });
    if (!response.ok) {
      reply.error = await errorText(response);
      return;
    }
    let firstToken = null;
    const done = await readEvents(response.body, (chunk) => {
      if (chunk.error) {
        reply.error = chunk.error.message ?? "the server reported an error";
        return;
      }
      const choice = chunk.choices?.[0];
      const delta = choice?.delta ?? {};
      if (delta.reasoning_content) {
        thinkingStarted ??= performance.now();
        reply.reasoning = (reply.reasoning ?? "") + delta.reasoning_content;
      }
      if (delta.content) {
        if (reply.reasoning && reply.thinkingSeconds === undefined) {
          reply.thinkingSeconds = (performance.now() - (thinkingStarted ?? started)) / 1000;
        }
        reply.content += delta.content;
      }
      if ((delta.content || delta.reasoning_content) && firstToken === null) firstToken = performance.now();
      if (choice?.finish_reason) reply.finish = choice.finish_reason;
      if (chunk.usage) {
        const seconds = (performance.now() - (firstToken ?? started)) / 1000;
        reply.usage = { tokens: chunk.usage.completion_tokens, seconds };
      }
      refresh();
      // Saved as it streams too, so a reload keeps what had arrived.
      if (performance.now() - lastSave > 1000) {
        lastSave = performance.now();
        saveConversations();
      }
    });
    if (!done && !reply.error) reply.error = "The answer ended early (the server closed the stream).";
  } catch (e) {
    if (e.name === "AbortError") reply.stopped = true;
    else reply.error = `Cannot reach the server (${e.message}).`;
  } finally {
    if (reply.reasoning && reply.thinkingSeconds === undefined && reply.content) {
      reply.thinkingSeconds = (performance.now() - (thinkingStarted ?? started)) / 1000;
    }
    conversation.updated = Date.now();
    state.streaming = null;
    view.node.classList.remove("streaming");
    view.update(true);
    announce(reply.error ? "The answer failed." : reply.stopped ? "Stopped." : "Answer complete.");
    saveConversations();
    renderConversationList();
    setBusy(false);
    $("prompt").focus();
  }
}

/** A render of the answer at most once per frame, however fast tokens arrive. */
function throttledRender(view) {
  let pending = false;
  return () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      view.update(false);
    });
  };
}

function stop() {
  state.streaming?.controller.abort();
}

async function send() {
  const prompt = $("prompt");
  const text = prompt.value;
  if (state.streaming || !text.trim()) return;
  let conversation = current();
  if (!conversation) {
    conversation = { id: newId(), title: titleOf(text), created: Date.now(), updated: Date.now(), messages: [] };
    state.conversations.unshift(conversation);
    state.currentId = conversation.id;
  }
  conversation.messages.push({ role: "user", content: text });
  const reply = { role: "assistant", content: "", model: $("model").value };
  conversation.messages.push(reply);
  conversation.updated = Date.now();
  prompt.value = "";
  fitPrompt();
  saveConversations();
  renderConversationList();
  renderMessages();
  await generate(conversation, reply);
}

// ---------------------------------------------------------------------------------------
// Views.

const views = new WeakMap();

/** The element of an assistant message, with an update() that redraws what changed. */
function messageView(message) {
  const existing = views.get(message);
  if (existing) return existing;
  const node = el("article", "msg assistant");
  const thinking = el("details", "thinking");
  const summary = el("summary");
  const thinkingText = el("div", "thinking-text");
  thinking.append(summary, thinkingText);
  const answer = el("div", "answer");
  const meta = el("div", "meta");
  const error = el("div", "error-box");
  error.setAttribute("role", "alert");
  node.append(thinking, answer, meta, error);
  let shown = null;
  let autoOpened = false;
  const update = (final) => {
    const streaming = !final && state.streaming?.reply === message;
    thinking.hidden = !message.reasoning;
    if (message.reasoning) {
      thinkingText.textContent = message.reasoning;
      const thinkingNow = streaming && !message.content;
      summary.textContent = thinkingNow
        ? "Thinking…"
        : message.thinkingSeconds !== undefined
          ? `Thought for ${formatSeconds(message.thinkingSeconds)}`
          : "Thoughts";
      // Open while the model thinks, closed once its answer begins.
      if (thinkingNow && !autoOpened) {
        thinking.open = true;
        autoOpened = true;
      } else if (!thinkingNow && autoOpened && thinking.open && message.content) {
        thinking.open = false;
        autoOpened = false;
      }
    }
    if (message.content !== shown) {
      answer.replaceChildren(renderMarkdown(message.content));
      shown = message.content;
    }
    meta.replaceChildren();
    if (!streaming) {
      const parts = [];
      if (message.model) parts.push(message.model);
      if (message.usage?.tokens) {
        parts.push(`${message.usage.tokens} tokens`);
        if (message.usage.seconds > 0.05) parts.push(`${(message.usage.tokens / message.usage.seconds).toFixed(1)} tokens/s`);
      }
      if (message.finish === "length") parts.push("cut off at the token limit");
      meta.append(document.createTextNode(parts.join(" · ")));
      if (message.stopped) {
        if (parts.length) meta.append(document.createTextNode(" · "));
        meta.append(el("span", "stopped", "stopped"));
      }
    }
    meta.hidden = meta.textContent === "";
    error.hidden = !message.error;
    error.textContent = message.error ?? "";
    followIfAtBottom();
  };
  const view = { node, update };
  views.set(message, view);
  update(true);
  return view;
}

function formatSeconds(s) {
  return s < 10 ? `${s.toFixed(1)} s` : `${Math.round(s)} s`;
}

let stickToBottom = true;

function followIfAtBottom() {
  const box = $("messages");
  if (stickToBottom) box.scrollTop = box.scrollHeight;
}

function renderMessages() {
  const box = $("messages");
  const conversation = current();
  document.title = conversation ? `${conversation.title} · Hearth` : "Hearth";
  if (!conversation || conversation.messages.length === 0) {
    box.replaceChildren(emptyState);
    return;
  }
  box.replaceChildren(
    ...conversation.messages.map((m) => {
      if (m.role === "user") {
        const node = el("article", "msg user");
        node.append(el("div", "bubble", m.content));
        return node;
      }
      return messageView(m).node;
    }),
  );
  stickToBottom = true;
  followIfAtBottom();
}

function renderConversationList() {
  const list = $("conversations");
  const sorted = [...state.conversations].sort((a, b) => (b.updated ?? 0) - (a.updated ?? 0));
  list.replaceChildren(
    ...sorted.map((c) => {
      const row = el("div", c.id === state.currentId ? "conversation active" : "conversation");
      row.dataset.id = c.id;
      const open = el("button", "open", c.title);
      open.type = "button";
      open.title = c.title;
      if (c.id === state.currentId) open.setAttribute("aria-current", "true");
      const del = el("button", "delete", "×");
      del.type = "button";
      del.setAttribute("aria-label", `Delete “${c.title}”`);
      del.title = "Delete";
      row.append(open, del);
      return row;
    }),
  );
}

function switchTo(id) {
  if (state.streaming) return;
  state.currentId = id;
  store(STORE.current, id);
  renderConversationList();
  renderMessages();
  closeSidebar();
  $("prompt").focus();
}

function deleteConversation(id) {
  if (state.streaming?.conversation.id === id) stop();
  state.conversations = state.conversations.filter((c) => c.id !== id);
  if (state.currentId === id) state.currentId = null;
  saveConversations();
  renderConversationList();
  renderMessages();
}

function setBusy(busy) {
  $("prompt").disabled = busy;
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  $("new-chat").disabled = busy;
  if (busy) $("stop").focus();
}

/** Tells screen readers (only) that something happened; the answer itself is not a live
 * region, so its text is not read out frame by frame as it streams. */
function announce(text) {
  $("announcer").textContent = text;
}

function setStatus(text, isError = false) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", isError);
}

function fitPrompt() {
  const prompt = $("prompt");
  prompt.style.height = "auto";
  prompt.style.height = `${prompt.scrollHeight + 2}px`;
}

function openSidebar() {
  $("app").classList.add("sidebar-open");
  $("toggle-sidebar").setAttribute("aria-expanded", "true");
}

function closeSidebar() {
  $("app").classList.remove("sidebar-open");
  $("toggle-sidebar").setAttribute("aria-expanded", "false");
}

// ---------------------------------------------------------------------------------------
// Dialogs: the API key and the settings.

let keyRequest = null;

/** Shows the key dialog; resolves with the saved key, or null if it was dismissed. */
function askForKey(message) {
  if (keyRequest) return keyRequest.promise;
  const dialog = $("key-dialog");
  const input = $("key-input");
  const error = $("key-error");
  error.hidden = !message;
  error.textContent = message ?? "";
  input.value = state.key;
  let resolve;
  const promise = new Promise((r) => (resolve = r));
  keyRequest = { promise, resolve };
  if (!dialog.open) dialog.showModal();
  input.focus();
  input.select();
  return promise;
}

function finishKeyRequest(key) {
  const request = keyRequest;
  keyRequest = null;
  request?.resolve(key);
}

function setupDialogs() {
  const keyDialog = $("key-dialog");
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("key-input").value.trim();
    if (!key) {
      $("key-error").textContent = "Enter a key, or press Escape to go on without one.";
      $("key-error").hidden = false;
      return;
    }
    state.key = key;
    store(STORE.key, key);
    keyDialog.close();
    finishKeyRequest(key);
  });
  $("key-forget").addEventListener("click", () => {
    state.key = "";
    localStorage.removeItem(STORE.key);
    $("key-input").value = "";
    $("key-input").focus();
  });
  keyDialog.addEventListener("close", () => finishKeyRequest(null));
  $("open-key").addEventListener("click", async () => {
    if ((await askForKey("")) !== null) loadModels();
  });

  const settings = $("settings-dialog");
  const fields = { system: "system", temperature: "temperature", top_p: "top-p", max_tokens: "max-tokens" };
  $("open-settings").addEventListener("click", () => {
    for (const [name, id] of Object.entries(fields)) $(id).value = state.settings[name];
    settings.showModal();
    $("system").focus();
  });
  $("settings-cancel").addEventListener("click", () => settings.close());
  $("settings-form").addEventListener("submit", (e) => {
    e.preventDefault();
    if (!$("settings-form").reportValidity()) return;
    for (const [name, id] of Object.entries(fields)) state.settings[name] = $(id).value.trim();
    store(STORE.settings, state.settings);
    settings.close();
    $("prompt").focus();
  });
}

// ---------------------------------------------------------------------------------------
// Wiring.

const emptyState = $("empty");

function setup() {
  const prompt = $("prompt");
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    send();
  });
  prompt.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && !e.altKey) {
      e.preventDefault();
      send();
    }
  });
  prompt.addEventListener("input", fitPrompt);
  $("stop").addEventListener("click", stop);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.streaming && !document.querySelector("dialog[open]")) stop();
  });
  $("new-chat").addEventListener("click", () => switchTo(null));
  $("conversations").addEventListener("click", (e) => {
    const row = e.target.closest(".conversation");
    if (!row) return;
    if (e.target.closest(".delete")) deleteConversation(row.dataset.id);
    else switchTo(row.dataset.id);
  });
  $("messages").addEventListener("click", (e) => {
    const button = e.target.closest(".codeblock .copy");
    if (!button) return;
    const code = button.closest(".codeblock").querySelector("code");
    copyText(code, button);
  });
  $("messages").addEventListener("scroll", () => {
    const box = $("messages");
    stickToBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 60;
  });
  $("model").addEventListener("change", () => {
    state.settings.model = $("model").value;
    store(STORE.settings, state.settings);
  });
  $("toggle-sidebar").addEventListener("click", () => {
    if ($("app").classList.contains("sidebar-open")) closeSidebar();
    else openSidebar();
  });
  $("scrim").addEventListener("click", closeSidebar);
  // Another tab changed the conversations: show its version while nothing streams here.
  window.addEventListener("storage", (e) => {
    if (e.key !== STORE.conversations || state.streaming) return;
    state.conversations = load(STORE.conversations, []);
    renderConversationList();
    renderMessages();
  });
  setupDialogs();

  if (!current()) state.currentId = null;
  renderConversationList();
  renderMessages();
  fitPrompt();
  prompt.focus();
  loadModels();
}

async function copyText(code, button) {
  try {
    await navigator.clipboard.writeText(code.textContent);
    button.textContent = "Copied";
  } catch {
    // No clipboard access (a page not served over loopback or https): select the code
    // for Ctrl+C instead.
    const range = document.createRange();
    range.selectNodeContents(code);
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    button.textContent = "Selected";
  }
  setTimeout(() => (button.textContent = "Copy"), 1500);
}

setup();
