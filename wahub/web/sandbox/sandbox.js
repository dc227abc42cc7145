/*
 * wahub sandbox chat: the simulated WhatsApp user's side of a conversation
 * with the bot, spoken over the /sandbox/ws WebSocket.
 *
 * DOM contract (tests and the operator docs rely on it):
 *   body[data-connection]      "connecting" | "connected" | "reconnecting"
 *   #messages                  the conversation, an <ol role="log" aria-live="polite">
 *   li.msg                     one bubble per message, oldest first
 *     [data-id]                the message id from the server
 *     [data-direction]         "in" (written by the person, right, green)
 *                              | "out" (the bot's reply, left, white)
 *     [data-status]            bot bubbles only: "queued" | "sent" | "delivered"
 *                              | "read" | "failed"; it only moves forward
 *     [data-pending]           "true" while the reply waits in the outbox
 *     .msg__text               the message text, WhatsApp formatting rendered by
 *                              whatsapp.js from text nodes only (never HTML)
 *     .msg__pending            a waiting reply's reason, e.g. "waiting: pair rate
 *                              limit, retrying in 4 s"
 *     .msg__error              a failed reply's reason
 *     time.msg__time           HH:MM local time; [datetime] holds the ISO instant
 *     .msg__tick[aria-label]   bot bubbles only: the status in words, e.g. "read"
 *     .msg__buttons button     reply buttons of a bot message,
 *                              [data-button-id] is the button id
 *   li.notice                  an error reported by the server
 *   #empty-hint                what to try, shown while there is no message
 *   #identity-error            why the number typed is not one (else hidden)
 *   #banner                    visible while the socket is down ("Reconnecting…")
 *   #identity-user, #identity-name, #composer-text, #composer-send
 *
 * localStorage keys: "wahub.sandbox.user", "wahub.sandbox.name".
 */
"use strict";

(() => {
  const STATUS_RANK = { queued: 0, sent: 1, delivered: 2, read: 3, failed: 4 };
  const isStatus = (value) => Object.prototype.hasOwnProperty.call(STATUS_RANK, value);
  const USER_PATTERN = /^[0-9]{6,15}$/;
  const STORAGE_USER = "wahub.sandbox.user";
  const STORAGE_NAME = "wahub.sandbox.name";
  const DEFAULT_NAME = "Sandbox user";
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 8000;
  const COUNTDOWN_MS = 1000;

  const el = {
    messages: document.getElementById("messages"),
    empty: document.getElementById("empty-hint"),
    userError: document.getElementById("identity-error"),
    chat: document.getElementById("chat"),
    banner: document.getElementById("banner"),
    state: document.getElementById("connection-state"),
    identity: document.getElementById("identity"),
    user: document.getElementById("identity-user"),
    name: document.getElementById("identity-name"),
    composer: document.getElementById("composer"),
    text: document.getElementById("composer-text"),
    send: document.getElementById("composer-send"),
  };

  const session = {
    socket: null,
    // Bumped on every new connection so events of a replaced socket are ignored.
    generation: 0,
    attempts: 0,
    retryTimer: null,
    // Bot message ids already acknowledged on the current connection.
    received: new Set(),
    seen: new Set(),
  };

  // ---- identity ------------------------------------------------------------

  function storageGet(key) {
    try {
      return window.localStorage.getItem(key);
    } catch {
      return null; // storage disabled: fall back to defaults for this visit
    }
  }

  function storageSet(key, value) {
    try {
      window.localStorage.setItem(key, value);
    } catch {
      // Storage disabled: the identity lasts for this visit only.
    }
  }

  function randomUser() {
    let digits = "1555";
    for (let i = 0; i < 7; i += 1) digits += Math.floor(Math.random() * 10);
    return digits;
  }

  function loadIdentity() {
    let user = storageGet(STORAGE_USER);
    if (!user || !USER_PATTERN.test(user)) {
      user = randomUser();
      storageSet(STORAGE_USER, user);
    }
    const name = storageGet(STORAGE_NAME) || DEFAULT_NAME;
    return { user, name };
  }

  let identity = loadIdentity();

  function numberProblem(user) {
    if (user === "") return "Type your number: 6 to 15 digits.";
    if (/[^0-9]/.test(user)) return `“${user}” is not a number: use digits only, without “+”, spaces or dashes.`;
    return `“${user}” has ${user.length} digits: a number has 6 to 15.`;
  }

  function applyIdentity(event) {
    if (event) event.preventDefault();
    const user = el.user.value.trim();
    const name = el.name.value.trim() || DEFAULT_NAME;
    const valid = USER_PATTERN.test(user);
    el.user.setAttribute("aria-invalid", valid ? "false" : "true");
    el.userError.hidden = valid;
    el.userError.textContent = valid ? "" : numberProblem(user);
    if (!valid) return;
    el.name.value = name;
    if (user === identity.user && name === identity.name) return;
    identity = { user, name };
    storageSet(STORAGE_USER, user);
    storageSet(STORAGE_NAME, name);
    el.messages.replaceChildren();
    updateEmpty();
    session.attempts = 0;
    connect();
  }

  // ---- rendering -------------------------------------------------------------

  function formatTime(timestamp) {
    const date = new Date(Number(timestamp) * 1000);
    if (Number.isNaN(date.getTime())) return { text: "", iso: "" };
    const pad = (n) => String(n).padStart(2, "0");
    return { text: `${pad(date.getHours())}:${pad(date.getMinutes())}`, iso: date.toISOString() };
  }

  function renderTick(tick, status) {
    tick.dataset.status = status;
    tick.setAttribute("aria-label", status);
    tick.replaceChildren(window.tickIcon(status));
  }

  function statusOf(message) {
    return isStatus(message.status) ? message.status : "queued";
  }

  function renderMessage(message) {
    const direction = message.direction === "out" ? "out" : "in";
    const item = document.createElement("li");
    item.className = `msg msg--${direction}`;
    item.dataset.id = String(message.id);
    item.dataset.direction = direction;

    const bubble = document.createElement("div");
    bubble.className = "msg__bubble";
    const text = document.createElement("div");
    text.className = "msg__text";
    if (message.text) {
      text.append(window.whatsappText(String(message.text)));
    } else {
      text.classList.add("msg__text--placeholder");
      text.textContent = `(${message.type || "message"})`;
    }

    const meta = document.createElement("span");
    meta.className = "msg__meta";
    const time = document.createElement("time");
    time.className = "msg__time";
    const when = formatTime(message.timestamp);
    time.textContent = when.text;
    if (when.iso) time.dateTime = when.iso;
    meta.append(time);

    const speaker = document.createElement("span");
    speaker.className = "visually-hidden";
    speaker.textContent = direction === "out" ? "wahub sandbox: " : "You: ";
    bubble.append(speaker, text, meta);
    item.append(bubble);

    if (direction === "out") {
      const status = statusOf(message);
      item.dataset.status = status;
      const tick = document.createElement("span");
      tick.className = "msg__tick";
      tick.setAttribute("role", "img");
      renderTick(tick, status);
      meta.append(tick);
      const buttons = Array.isArray(message.buttons) ? message.buttons : [];
      if (buttons.length > 0) item.append(renderButtons(item.dataset.id, buttons));
      if (message.pending && typeof message.pending === "object" && status === "queued") {
        markPending(item, message.pending);
      }
      if (status === "failed" && message.error) showFailure(item, String(message.error));
    }
    return item;
  }

  // ---- replies waiting in the outbox ------------------------------------------

  function markPending(item, pending) {
    item.dataset.pending = "true";
    const retryIn = Number(pending.retry_in);
    item.dataset.reason = String(pending.reason || "queued to be sent");
    item.dataset.retryAt = Number.isFinite(retryIn) && retryIn > 0 ? String(Date.now() + retryIn * 1000) : "";
    let note = item.querySelector(".msg__pending");
    if (!note) {
      note = document.createElement("p");
      note.className = "msg__pending";
      item.querySelector(".msg__bubble").append(note);
    }
    renderPending(item);
  }

  function renderPending(item) {
    const note = item.querySelector(".msg__pending");
    if (!note) return;
    let text = `waiting: ${item.dataset.reason}`;
    if (item.dataset.retryAt) {
      const seconds = Math.ceil((Number(item.dataset.retryAt) - Date.now()) / 1000);
      text += seconds > 0 ? `, retrying in ${seconds} s` : ", retrying now";
    }
    note.textContent = text;
  }

  function countDown() {
    for (const item of el.messages.querySelectorAll('li.msg[data-pending="true"]')) renderPending(item);
  }

  function showFailure(item, reason) {
    let note = item.querySelector(".msg__error");
    if (!note) {
      note = document.createElement("p");
      note.className = "msg__error";
      item.querySelector(".msg__bubble").append(note);
    }
    note.textContent = `not sent: ${reason}`;
  }

  function clearPending(item) {
    delete item.dataset.pending;
    delete item.dataset.reason;
    delete item.dataset.retryAt;
    item.querySelector(".msg__pending")?.remove();
  }

  function showPending(message) {
    const existing = findBubble(message.id);
    if (existing) {
      if (existing.dataset.status === "queued" && message.pending) markPending(existing, message.pending);
      return;
    }
    showMessage(message);
  }

  // The waiting reply ``id`` became ``message`` (sent, or failed); null: it is gone.
  function settle(id, message) {
    const waiting = findBubble(id);
    if (!waiting) {
      if (message) showMessage(message);
      return;
    }
    if (!message || (String(message.id) !== String(id) && findBubble(message.id))) {
      waiting.remove();
      updateEmpty();
      return;
    }
    const replacement = renderMessage(message);
    waiting.replaceWith(replacement);
  }

  function renderButtons(contextId, buttons) {
    const group = document.createElement("div");
    group.className = "msg__buttons";
    group.setAttribute("role", "group");
    group.setAttribute("aria-label", "Reply buttons");
    for (const button of buttons) {
      const control = document.createElement("button");
      control.type = "button";
      control.className = "msg__button";
      control.dataset.buttonId = String(button.id);
      control.textContent = String(button.title);
      control.disabled = !isOpen();
      control.addEventListener("click", () => {
        sendFrame({ type: "button", id: String(button.id), title: String(button.title), context: contextId });
      });
      group.append(control);
    }
    return group;
  }

  function findBubble(id) {
    for (const item of el.messages.querySelectorAll("li.msg")) {
      if (item.dataset.id === String(id)) return item;
    }
    return null;
  }

  function advanceStatus(item, status) {
    if (!item || item.dataset.direction !== "out" || !isStatus(status)) return;
    const current = item.dataset.status;
    // Statuses only move forward and "failed" is final, as on the server.
    if (current === "failed" || STATUS_RANK[status] <= STATUS_RANK[current]) return;
    item.dataset.status = status;
    clearPending(item);
    renderTick(item.querySelector(".msg__tick"), status);
  }

  function updateEmpty() {
    el.empty.hidden = el.messages.querySelector("li.msg") !== null;
  }

  function nearBottom() {
    const { scrollTop, scrollHeight, clientHeight } = el.chat;
    return scrollHeight - scrollTop - clientHeight < 120;
  }

  function scrollToEnd() {
    el.chat.scrollTop = el.chat.scrollHeight;
  }

  function showHistory(messages) {
    el.messages.replaceChildren(...messages.map(renderMessage));
    updateEmpty();
    scrollToEnd();
  }

  function showMessage(message) {
    const existing = findBubble(message.id);
    if (existing) {
      advanceStatus(existing, statusOf(message));
      return;
    }
    const follow = nearBottom() || message.direction === "in";
    el.messages.append(renderMessage(message));
    updateEmpty();
    if (follow) scrollToEnd();
  }

  function showNotice(text) {
    const item = document.createElement("li");
    item.className = "notice";
    item.setAttribute("role", "alert");
    item.textContent = text;
    el.messages.append(item);
    scrollToEnd();
  }

  // ---- acknowledgements ----------------------------------------------------

  // A reply still waiting in the outbox has not reached the phone: nothing to acknowledge.
  function botBubbles() {
    return el.messages.querySelectorAll('li.msg[data-direction="out"]:not([data-pending="true"])');
  }

  function acknowledge() {
    const received = [];
    for (const item of botBubbles()) {
      const { id, status } = item.dataset;
      if (session.received.has(id) || STATUS_RANK[status] >= STATUS_RANK.delivered) continue;
      session.received.add(id);
      received.push(id);
    }
    if (received.length > 0) sendFrame({ type: "received", ids: received });
    markSeen();
  }

  function markSeen() {
    if (document.visibilityState !== "visible" || !isOpen()) return;
    const seen = [];
    for (const item of botBubbles()) {
      const { id, status } = item.dataset;
      if (session.seen.has(id) || status === "read" || status === "failed") continue;
      session.seen.add(id);
      seen.push(id);
    }
    if (seen.length > 0) sendFrame({ type: "seen", ids: seen });
  }

  // ---- connection ------------------------------------------------------------

  function isOpen() {
    return session.socket !== null && session.socket.readyState === WebSocket.OPEN;
  }

  function sendFrame(frame) {
    if (!isOpen()) return false;
    session.socket.send(JSON.stringify(frame));
    return true;
  }

  function setConnection(state) {
    document.body.dataset.connection = state;
    const online = state === "connected";
    el.state.textContent = { connected: "online", connecting: "connecting…", reconnecting: "reconnecting…" }[state];
    // The banner takes room from the conversation: keep the latest message in view.
    const follow = nearBottom();
    el.banner.hidden = state !== "reconnecting";
    if (follow) scrollToEnd();
    el.send.disabled = !online;
    for (const button of el.messages.querySelectorAll(".msg__button")) button.disabled = !online;
  }

  function socketUrl() {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams({ user: identity.user, name: identity.name });
    return `${scheme}//${window.location.host}/sandbox/ws?${query}`;
  }

  function connect() {
    window.clearTimeout(session.retryTimer);
    session.retryTimer = null;
    if (session.socket) {
      const previous = session.socket;
      session.socket = null;
      previous.close(1000, "identity changed");
    }
    session.generation += 1;
    const generation = session.generation;
    session.received = new Set();
    session.seen = new Set();
    if (session.attempts === 0) setConnection("connecting");

    const socket = new WebSocket(socketUrl());
    session.socket = socket;
    const current = () => generation === session.generation;

    socket.addEventListener("open", () => {
      if (!current()) return;
      session.attempts = 0;
      setConnection("connected");
    });
    socket.addEventListener("message", (event) => {
      if (current()) handleFrame(event.data);
    });
    socket.addEventListener("close", () => {
      if (!current()) return;
      session.socket = null;
      scheduleReconnect();
    });
  }

  function scheduleReconnect() {
    setConnection("reconnecting");
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** session.attempts);
    // Jitter keeps many open tabs from hammering a restarting daemon in step.
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    session.attempts += 1;
    session.retryTimer = window.setTimeout(connect, delay);
  }

  function retryNow() {
    if (session.retryTimer === null) return;
    connect();
  }

  function handleFrame(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return; // not ours: the protocol only sends JSON objects
    }
    if (!frame || typeof frame !== "object") return;
    switch (frame.type) {
      case "history":
        showHistory(Array.isArray(frame.messages) ? frame.messages : []);
        acknowledge();
        break;
      case "message":
        if (frame.message && typeof frame.message === "object") {
          if (frame.replaces) settle(String(frame.replaces), frame.message);
          else showMessage(frame.message);
          acknowledge();
        }
        break;
      case "pending":
        if (frame.message && typeof frame.message === "object") showPending(frame.message);
        break;
      case "settled":
        settle(String(frame.id), frame.message && typeof frame.message === "object" ? frame.message : null);
        acknowledge();
        break;
      case "status": {
        const item = findBubble(frame.id);
        advanceStatus(item, frame.status);
        if (item && frame.status === "failed" && frame.error) showFailure(item, String(frame.error));
        break;
      }
      case "error":
        showNotice(String(frame.message || "The sandbox reported an error."));
        break;
      default:
        break;
    }
  }

  // ---- composer --------------------------------------------------------------

  function sendText(event) {
    if (event) event.preventDefault();
    const text = el.text.value;
    if (text.trim() === "") return;
    // Only clear the box once the frame is on its way, so nothing typed is lost.
    if (sendFrame({ type: "text", text })) {
      el.text.value = "";
      resizeComposer();
    }
  }

  function resizeComposer() {
    el.text.style.height = "auto";
    el.text.style.height = `${Math.min(el.text.scrollHeight, 140)}px`;
  }

  el.text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) sendText(event);
  });
  el.text.addEventListener("input", resizeComposer);
  el.composer.addEventListener("submit", sendText);

  el.user.value = identity.user;
  el.name.value = identity.name;
  el.identity.addEventListener("submit", applyIdentity);
  el.user.addEventListener("change", () => applyIdentity());
  el.name.addEventListener("change", () => applyIdentity());

  document.addEventListener("visibilitychange", markSeen);
  window.setInterval(countDown, COUNTDOWN_MS);
  window.addEventListener("online", retryNow);

  connect();
})();
