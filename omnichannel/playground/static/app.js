// omnichannel playground: the page. Plain JavaScript, no dependencies, no build step.
// The server pushes every change as a server-sent event (/events); the page only draws it
// and posts the visitor's actions (/api/...).
"use strict";

const model = {
  info: null,
  channels: [],
  chats: {},
  exchanges: new Map(),
  queues: null,
  states: {},
  current: null,
  offset: 0, // server clock minus this page's clock, in seconds
  open: new Map(), // <details> the user opened or closed, by key
};

// DOM ----------------------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "className") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const $ = (selector) => document.querySelector(selector);

function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
}

function remembered(key, fallback) {
  return model.open.has(key) ? model.open.get(key) : fallback;
}

function disclosure(key, summary, body, fallback, className) {
  const head = h("summary", null, summary);
  const node = h("details", { className, open: remembered(key, fallback) }, head, body);
  // only the user's clicks are remembered (a node created open fires "toggle" too)
  head.addEventListener("click", () => model.open.set(key, !node.open));
  return node;
}

function statusBadge(status) {
  const family = status ? String(status)[0] : "0";
  return h("span", { className: `status s${family}` }, status === null || status === undefined ? "—" : status);
}

function stateBadge(state) {
  return h("span", { className: `state ${state}` }, state);
}

function pre(text) {
  return h("pre", null, text === null || text === undefined || text === "" ? "(empty)" : text);
}

function headersText(headers) {
  return Object.entries(headers || {}).map(([k, v]) => `${k}: ${v}`).join("\n");
}

function ms(value) {
  if (value === null || value === undefined) return "";
  return value < 10 ? `${value.toFixed(1)} ms` : `${Math.round(value)} ms`;
}

function nextIn(at) {
  return h("span", { className: "muted", dataset: { nextAt: at } }, countdown(at));
}

function countdown(at) {
  const left = at - (Date.now() / 1000 + model.offset);
  return left > 0 ? `next attempt in ${left.toFixed(1)} s` : "next attempt due";
}

setInterval(() => {
  for (const node of document.querySelectorAll("[data-next-at]")) {
    node.textContent = countdown(Number(node.dataset.nextAt));
  }
}, 250);

// talking to the server ----------------------------------------------------------------------
function showError(text) {
  $("#error").textContent = text || "";
}

async function api(action, data) {
  showError("");
  try {
    const response = await fetch(`/api/${action}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Playground": "1" },
      body: JSON.stringify(data),
    });
    const answer = await response.json();
    if (!response.ok) showError(answer.error || `HTTP ${response.status}`);
    return answer;
  } catch (error) {
    showError(`The playground does not answer (${error}).`);
    return null;
  }
}

async function sendFile(file) {
  const state = $("#file-state").value;
  const query = new URLSearchParams({ channel: model.current, name: file.name, state });
  showError("");
  try {
    const response = await fetch(`/api/file?${query}`, {
      method: "POST",
      headers: { "Content-Type": file.type || "application/octet-stream", "X-Playground": "1" },
      body: file,
    });
    const answer = await response.json();
    if (!response.ok) showError(answer.error || `HTTP ${response.status}`);
  } catch (error) {
    showError(`The playground does not answer (${error}).`);
  }
}

function connect() {
  const events = new EventSource("/events");
  events.addEventListener("open", () => {
    $("#live").textContent = "live";
    $("#live").className = "on";
  });
  events.addEventListener("error", () => {
    $("#live").textContent = "reconnecting…";
    $("#live").className = "off";
  });
  events.addEventListener("snapshot", (event) => {
    const data = JSON.parse(event.data);
    model.info = data.info;
    model.channels = data.channels;
    model.chats = data.chats;
    model.exchanges = new Map(data.exchanges.map((x) => [x.id, x]));
    model.queues = data.queues;
    model.states = data.states;
    model.offset = data.now - Date.now() / 1000;
    if (!model.channels.some((c) => c.id === model.current)) model.current = model.channels[0].id;
    document.body.dataset.ready = "true";
    render();
  });
  events.addEventListener("chat", (event) => {
    const chat = JSON.parse(event.data);
    model.chats[chat.channel] = chat;
    schedule("chat");
  });
  events.addEventListener("exchange", (event) => {
    const exchange = JSON.parse(event.data);
    model.exchanges.set(exchange.id, exchange);
    schedule("wire");
  });
  events.addEventListener("queues", (event) => {
    model.queues = JSON.parse(event.data);
    model.offset = model.queues.now - Date.now() / 1000;
    schedule("queues");
  });
  events.addEventListener("state", (event) => {
    const state = JSON.parse(event.data);
    model.states[state.channel] = state;
    schedule("state");
  });
}

// drawing (at most once a frame per part) ----------------------------------------------------
const due = new Set();
function schedule(part) {
  if (due.size === 0) requestAnimationFrame(flush);
  due.add(part);
}
function flush() {
  const parts = new Set(due);
  due.clear();
  if (parts.has("chat")) { renderTabs(); renderChat(); renderPlatform(); }
  if (parts.has("wire")) renderWire();
  if (parts.has("state")) renderState();
  if (parts.has("queues")) renderQueues();
}

function channel() {
  return model.channels.find((c) => c.id === model.current);
}

function render() {
  const info = model.info;
  fill($("#info"), `bot: ${info.bot} · store: ${info.store} · bound to ${info.host} only` +
    (info.config ? ` · config: ${info.config}` : ""));
  fill($("#notes"), info.notes.map((n) => h("div", null, n)));
  renderTabs();
  renderChat();
  renderPlatform();
  renderWire();
  renderState();
  renderQueues();
}

function renderTabs() {
  fill($("#tabs"), model.channels.map((c) => {
    const chat = model.chats[c.id] || {};
    return h("button", {
      className: `tab${c.id === model.current ? " active" : ""}`,
      role: "tab",
      type: "button",
      dataset: { channel: c.id },
      onclick: () => { model.current = c.id; render(); $("#text").focus(); },
    }, c.title, chat.operator ? h("span", { className: "badge" }, "with an operator") : null);
  }));
}

function renderChat() {
  const c = channel();
  const chat = model.chats[c.id];
  fill($("#chat-head"),
    h("span", { className: "grow" }, `${c.name} · chat `, h("code", { id: "chat-id" }, chat.chat ?? "(opened by the first message)")),
    h("button", { id: "new-chat", type: "button", onclick: () => api("new-chat", { channel: c.id }) }, "New chat"),
    chat.operator ? h("div", { className: "operator", id: "operator" },
      "With an operator: ", chat.operator, " ",
      h("button", { id: "give-back", type: "button", onclick: () => api("give-back", { channel: c.id }) }, c.give_back || "Give back to the bot")) : null);
  const lastKeyboard = [...chat.messages].reverse().find((m) => m.buttons);
  const box = $("#messages");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const before = box.childElementCount;
  fill(box, chat.messages.map((m) => message(c, chat, m, m === lastKeyboard)));
  if (atBottom || chat.messages.length !== before) box.scrollTop = box.scrollHeight;
  $("#file-label").hidden = !c.files;
  $("#file-state-label").hidden = !c.uploading;
  if (!c.uploading) $("#file-state").value = "ready";
  $("#hint").textContent = c.hint;
}

function message(c, chat, m, activeKeyboard) {
  const node = h("div", { className: `msg ${m.role}`, dataset: { exchange: m.exchange } });
  if (m.buttons) {
    const enabled = activeKeyboard && !chat.operator;
    node.append(h("div", { className: "keyboard" }, m.buttons.map((row) => h("div", { className: "row" },
      row.map((b) => h("button", {
        className: "kb",
        type: "button",
        disabled: !enabled,
        dataset: { id: b.id },
        onclick: () => api("press", { channel: c.id, id: b.id, text: b.text }),
      }, b.text))))));
  } else if (m.file) {
    node.append(h("a", { href: m.file.url, target: "_blank", rel: "noopener" }, `📎 ${m.file.name}`));
    if (m.role === "visitor") {
      node.append(h("span", { className: "pressed" }, m.file.state === "uploading" ? "still uploading" : "ready"));
      if (m.file.state === "uploading") {
        node.append(h("button", {
          className: "ready-btn",
          type: "button",
          onclick: () => api("file-ready", { channel: c.id, file: m.file.id }),
        }, "Upload finished: send it ready"));
      }
    }
  } else {
    node.append(m.text);
    if (m.pressed) node.append(h("span", { className: "pressed" }, `pressed button ${m.pressed}`));
  }
  return node;
}

function renderPlatform() {
  const c = channel();
  const chat = model.chats[c.id];
  const select = h("select", {
    id: "platform-mode",
    onchange: (e) => api("platform", { channel: c.id, mode: e.target.value }),
  },
  h("option", { value: "ok", selected: chat.mode === "ok" }, "accepts every call"),
  h("option", { value: "down", selected: chat.mode === "down" }, "is down (503 to every call)"),
  h("option", { value: "refuse", selected: chat.mode === "refuse" }, "refuses every call (400)"));
  fill($("#platform"),
    h("span", null, `The fake ${c.faked} `), select,
    h("button", { id: "fail-next", type: "button", onclick: () => api("platform", { channel: c.id, mode: "fail-next" }) }, "Fail the next call (503)"),
    h("div", { className: "note" }, `at ${c.fake_url}; the webhook is ${c.webhook}`),
    c.note ? h("div", { className: "note", id: "platform-note" }, c.note) : null);
}

function renderWire() {
  const c = channel();
  const list = [...model.exchanges.values()].filter((x) => x.channel === c.id).sort((a, b) => b.n - a.n);
  if (!list.length) {
    fill($("#wire"), h("p", { className: "empty" }, "Nothing yet: write to the bot on the left."));
    return;
  }
  fill($("#wire"), list.map((x, i) => exchange(c, x, i === 0)));
}

function turnLine(turn) {
  return [
    h("div", { className: "line" },
      turn.id ? `turn ${turn.id}` : "a repeated delivery: not stored again",
      stateBadge(turn.state),
      turn.attempt > 1 ? h("span", { className: "muted" }, `attempt ${turn.attempt}`) : null,
      turn.next_at && turn.state === "failed" ? nextIn(turn.next_at) : null),
    turn.error ? h("div", { className: "error-text" }, turn.error) : null,
  ];
}

// a webhook that followed the visitor's action (the Page-messenger AI's answer to the bridge)
function relayView(x, relay, r) {
  const inbound = relay.inbound;
  return h("div", { className: "part relay" },
    h("h3", null, relay.title, " ", h("span", { className: "muted" }, `+${ms(relay.after_ms)} after the webhook`)),
    inbound ? [
      h("div", { className: "line" }, `${inbound.method} ${inbound.path}`, statusBadge(inbound.status), h("span", { className: "muted" }, ms(inbound.ms))),
      disclosure(`${x.id}:r${r}`, "request", [pre(headersText(inbound.headers)), pre(inbound.body)], false, "body"),
      disclosure(`${x.id}:r${r}-answer`, "answer", pre(inbound.response), false, "body"),
    ] : null,
    relay.notes.map((n) => h("div", { className: "note" }, n)),
    relay.turn ? turnLine(relay.turn) : null);
}

function itemView(x, item) {
  return h("div", { className: `item ${item.state}` },
    h("div", { className: "line" }, item.summary, stateBadge(item.state),
      item.attempts > 1 ? h("span", { className: "muted" }, `${item.attempts} attempts`) : null,
      item.state === "retrying" && item.next_at ? nextIn(item.next_at) : null),
    item.error ? h("div", { className: "error-text" }, item.error) : null,
    item.calls.map((call, i) => callView(`${x.id}:${item.id}:${i}`, call)));
}

function exchange(c, x, newest) {
  const inbound = x.inbound;
  const relays = x.relays || [];
  const wire = c.wire || {};
  const calls = x.calls.length + x.items.reduce((n, item) => n + item.calls.length, 0);
  const summary = [
    h("span", { className: "num" }, `#${x.n}`),
    h("span", { className: "what" }, `${x.action.kind}: ${x.action.text}`),
    inbound ? statusBadge(inbound.status) : h("span", { className: "muted" }, "not posted"),
    x.turn ? stateBadge(x.turn.state) : null,
    ...relays.filter((relay) => relay.inbound).map((relay) => h("span", { className: "relay-badge" }, relay.badge || "then", " ", statusBadge(relay.inbound.status))),
    h("span", { className: "muted" }, `${calls} call${calls === 1 ? "" : "s"}`),
  ];
  const parts = [];
  if (inbound) {
    parts.push(h("div", { className: "part inbound" },
      h("h3", null, wire.inbound || "Webhook: the platform → the bot"),
      h("div", { className: "line" }, `${inbound.method} ${inbound.path}`, statusBadge(inbound.status), h("span", { className: "muted" }, ms(inbound.ms))),
      disclosure(`${x.id}:in`, "request", [pre(headersText(inbound.headers)), pre(inbound.body)], newest, "body"),
      disclosure(`${x.id}:in-answer`, "answer", pre(inbound.response), false, "body"),
      inbound.note ? h("div", { className: "note" }, inbound.note) : null));
  }
  if (x.notes.length || x.turn || x.bot) {
    const turn = x.turn;
    parts.push(h("div", { className: "part turn" },
      h("h3", null, "The turn"),
      x.notes.map((n) => h("div", { className: "note" }, n)),
      turn ? turnLine(turn) : null,
      x.bot ? h("div", { className: "note" },
        `${x.bot.who || "The bot"} saw a ${x.bot.kind} message: “${x.bot.text ?? ""}”`,
        x.bot.replies !== null ? ` · ${x.bot.replies} repl${x.bot.replies === 1 ? "y" : "ies"}` : " · running…",
        x.bot.handed_over ? " · handed over" : "") : null,
      turn && turn.state === "done" && !x.bot ? h("div", { className: "note" }, "The channel did not run the bot for it (see the chat).") : null));
  }
  // the outbox items in order, each webhook that followed them (relays) after the items it
  // followed, then the items its turn made (under the relay's own heading)
  const outbound = (title, items, direct) => h("div", { className: "part outbound" },
    h("h3", null, title),
    items.map((item) => itemView(x, item)),
    direct.map((call, i) => callView(`${x.id}:c${i}`, call)));
  let title = wire.outbound || "The bot's calls: the outbox → the platform";
  let start = 0;
  relays.forEach((relay, r) => {
    const upto = Math.max(start, Math.min(relay.after_items, x.items.length));
    if (upto > start) parts.push(outbound(title, x.items.slice(start, upto), []));
    parts.push(relayView(x, relay, r));
    start = upto;
    title = relay.then || title;
  });
  if (x.items.length > start || x.calls.length) parts.push(outbound(title, x.items.slice(start), x.calls));
  const node = disclosure(x.id, summary, parts, newest, "exchange");
  node.dataset.id = x.id;
  return node;
}

function callView(key, call) {
  return h("div", { className: "call" },
    h("div", { className: "line" }, `${call.method} ${call.path}`, statusBadge(call.status),
      h("span", { className: "muted" }, `+${ms(call.after_ms)} after the webhook`)),
    disclosure(key, "request and answer",
      [pre(headersText(call.headers)), pre(call.body), h("div", { className: "note" }, `answer ${call.status} in ${ms(call.ms)}`), pre(call.response)],
      false, "body"));
}

function table(values) {
  const rows = Object.entries(values || {});
  if (!rows.length) return h("p", { className: "empty" }, "none");
  return h("table", null, rows.map(([k, v]) => h("tr", null, h("td", null, k),
    h("td", null, v === null || v === undefined ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v)))));
}

function renderState() {
  const c = channel();
  const s = model.states[c.id];
  fill($("#variables"), s && s.variables ? table(s.variables) :
    h("p", { className: "empty" }, "What the agent gets about the visitor appears with the first turn."));
  if (!s) {
    fill($("#state"), h("p", { className: "empty" }, "Nothing stored yet."));
    return;
  }
  const conversation = s.conversation || {};
  const history = conversation.history || [];
  fill($("#state"),
    h("div", { className: "note" }, `conversation ${s.chat ?? ""}`),
    h("div", { id: "turn-state" }, pre(JSON.stringify(conversation.state || {}, null, 2))),
    h("h2", null, `history (${history.length})`),
    history.length ? h("ul", { className: "history", id: "history" }, history.map((line) =>
      h("li", null, h("span", { className: "role" }, line[0]), line[1]))) : h("p", { className: "empty" }, "empty"),
    s.user ? disclosure("user-state", "turn.user_state", pre(JSON.stringify(s.user.state || s.user, null, 2)), false, "body") : null,
    s.record ? disclosure("record", "what the channel keeps", pre(JSON.stringify(s.record, null, 2)), false, "body") : null);
}

function renderQueues() {
  const q = model.queues;
  if (!q) {
    fill($("#queues"), h("p", { className: "empty" }, "…"));
    return;
  }
  fill($("#queues"),
    h("div", { className: "counts" },
      h("span", null, "inbox ", h("b", { id: "inbox-count" }, q.inbox_pending)),
      h("span", null, "outbox ", h("b", { id: "outbox-count" }, q.outbox_pending)),
      h("span", null, "dead ", h("b", { id: "dead-count" }, q.dead.length))),
    q.pending.length ? q.pending.map((item) => h("div", { className: "qrow pending" },
      h("div", { className: "line" }, item.queue, stateBadge(item.state), item.summary),
      item.error ? h("div", { className: "error-text" }, item.error) : null,
      item.state === "retrying" && item.next_at ? nextIn(item.next_at) : null)) :
      h("p", { className: "empty" }, "Nothing pending."),
    q.dead.map((item) => h("div", { className: "qrow dead", dataset: { id: item.id } },
      h("div", { className: "line" }, `${item.queue} dead letter`, h("span", null, item.summary)),
      h("div", { className: "error-text" }, `after ${item.attempts} attempt(s): ${item.error}`),
      h("div", { className: "actions" },
        h("button", { className: "retry", type: "button", onclick: () => api("dead", { id: item.id, op: "retry" }) }, "Retry"),
        h("button", { className: "drop", type: "button", onclick: () => api("dead", { id: item.id, op: "drop" }) }, "Drop")))));
}

// the visitor's inputs -----------------------------------------------------------------------
window.addEventListener("DOMContentLoaded", () => {
  $("#composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("#text").value.trim();
    if (!text || !model.current) return;
    $("#text").value = "";
    api("send", { channel: model.current, text });
  });
  $("#file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) sendFile(file).finally(() => { event.target.value = ""; });
  });
  connect();
});
