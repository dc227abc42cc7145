/*
 * wahub inbox: the operators' page. It speaks the JSON API under /inbox/api and
 * follows /inbox/ws for live updates (docs/inbox.md).
 *
 * Every value from the server is put in the page as text nodes, through
 * whatsappText() for message texts, or as attributes that cannot run code;
 * links and media point only at /inbox/... paths (and geo: for locations).
 *
 * DOM contract (tests rely on it):
 *   body[data-connection]   "connecting" | "connected" | "reconnecting" | "unavailable"
 *                           (unavailable: the socket failed again and again; #connection says why)
 *   body[data-view]         "list" | "conversation" | "contact" (phone widths)
 *   body[data-open]         the id of the open conversation, "" when none
 *   body[data-last-alert]   the id of the last conversation announced as queued
 *   li.conv[data-id][data-section]      a conversation in the list
 *   li.entry[data-kind][data-id]        a timeline line: message, event or note
 *     li.msg[data-direction][data-type][data-status]
 *     .msg__tick[aria-label]            outbound messages: the status in words
 *
 * localStorage key: "wahub.inbox.muted" ("1" when the alert sound is off).
 */
"use strict";

(() => {
  const SECTIONS = [
    ["queued", "Queued"],
    ["mine", "Mine"],
    ["open", "Open"],
    ["resolved", "Resolved"],
  ];
  const STATUS_RANK = { queued: 0, sent: 1, delivered: 2, read: 3, failed: 4, refused: 4 };
  const FINAL = new Set(["failed", "refused"]);
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  // The list is loaded once the socket says where the feed is, or this long after start without it.
  const LIVE_WAIT_MS = 1500;
  // Failed socket attempts in a row before the page says live updates are unavailable.
  const UNAVAILABLE_AFTER = 3;
  const TICK_MS = 10000;
  const MUTED_KEY = "wahub.inbox.muted";

  const $ = (id) => document.getElementById(id);
  const el = {
    body: document.body,
    connectionText: $("connection-text"),
    bell: $("bell"),
    mute: $("mute"),
    adminOpen: $("admin-open"),
    signOut: $("sign-out"),
    search: $("search"),
    searchText: $("search-text"),
    sections: $("sections"),
    empty: $("conversation-empty"),
    conversation: $("conversation"),
    back: $("back"),
    convName: $("conv-name"),
    convState: $("conv-state"),
    take: $("action-take"),
    assign: $("assign"),
    assignTo: $("assign-to"),
    assignButton: $("action-assign"),
    release: $("action-release"),
    resolve: $("action-resolve"),
    contactOpen: $("contact-open"),
    actionError: $("action-error"),
    scroll: $("timeline-scroll"),
    older: $("older"),
    timeline: $("timeline"),
    modeReply: $("mode-reply"),
    modeNote: $("mode-note"),
    blocked: $("blocked"),
    blockedText: $("blocked-text"),
    blockedTake: $("blocked-take"),
    templates: $("templates"),
    whyNot: $("why-not"),
    templatePick: $("template-pick"),
    templateParams: $("template-params"),
    templatePreview: $("template-preview"),
    templateSend: $("template-send"),
    quote: $("quote"),
    quoteText: $("quote-text"),
    quoteCancel: $("quote-cancel"),
    attachment: $("attachment"),
    attachmentName: $("attachment-name"),
    attachmentCancel: $("attachment-cancel"),
    attach: $("attach"),
    attachLabel: $("attach-label"),
    cannedOpen: $("canned-open"),
    canned: $("canned"),
    composerError: $("composer-error"),
    form: $("composer-form"),
    text: $("composer-text"),
    send: $("composer-send"),
    contactBack: $("contact-back"),
    contactName: $("contact-name"),
    contactPhone: $("contact-phone"),
    contactBsuid: $("contact-bsuid"),
    contactLanguage: $("contact-language"),
    contactLanguageSource: $("contact-language-source"),
    contactTags: $("contact-tags"),
    tagForm: $("tag-form"),
    tagNew: $("tag-new"),
    contactConsent: $("contact-consent"),
    contactLedger: $("contact-ledger"),
    contact: $("contact"),
    contactError: $("contact-error"),
    admin: $("admin"),
    adminClose: $("admin-close"),
    adminOperators: $("admin-operators"),
    adminAdd: $("admin-add"),
    adminName: $("admin-name"),
    adminPassword: $("admin-password"),
    adminAdmin: $("admin-admin"),
    adminError: $("admin-error"),
  };

  const me = { name: el.body.dataset.operator || "", admin: el.body.dataset.admin === "true" };
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  const state = {
    operators: [],
    languages: [],
    canned: [],
    items: new Map(), // conversation id -> item
    query: "",
    open: null, // {id, conversation, contact, composer, next, nodes, byProvider, entryOf}
    loading: null, // {id, entries}: the conversation being opened
    mode: "reply",
    replyTo: null,
    attachment: null,
    clientId: null,
    socket: null,
    generation: 0,
    attempts: 0,
    retryTimer: null,
    cursor: null,
    helloCursor: null,
    seen: new Set(),
    frames: Promise.resolve(),
    ready: false,
    starting: null,
    failures: 0, // socket attempts refused in a row
    unavailable: "", // why, as the server says it
    lastRead: new Map(),
    audio: null,
  };

  // ---- small helpers ---------------------------------------------------------

  function node(tag, className, text) {
    const element = document.createElement(tag);
    if (className) element.className = className;
    if (text !== undefined && text !== null) element.textContent = String(text);
    return element;
  }

  function str(value) {
    return value === undefined || value === null ? "" : String(value);
  }

  function obj(value) {
    return value && typeof value === "object" && !Array.isArray(value) ? value : {};
  }

  function list(value) {
    return Array.isArray(value) ? value : [];
  }

  // Only our own authenticated paths are ever used as a link or a source.
  function safeUrl(url) {
    const text = str(url);
    return text.startsWith("/inbox/") && !text.startsWith("//") && !text.includes("\\") ? text : null;
  }

  function toMs(at) {
    if (typeof at === "number") return at < 1e12 ? at * 1000 : at;
    const parsed = Date.parse(str(at));
    return Number.isNaN(parsed) ? null : parsed;
  }

  function pad(n) {
    return String(n).padStart(2, "0");
  }

  function clock(at) {
    const ms = toMs(at);
    if (ms === null) return { text: "", iso: "" };
    const date = new Date(ms);
    const today = new Date();
    const time = `${pad(date.getHours())}:${pad(date.getMinutes())}`;
    const sameDay = date.toDateString() === today.toDateString();
    const day = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
    return { text: sameDay ? time : `${day} ${time}`, iso: date.toISOString() };
  }

  function timeNode(at, className) {
    const time = node("time", className);
    const when = clock(at);
    time.textContent = when.text;
    if (when.iso) time.dateTime = when.iso;
    return time;
  }

  function duration(ms) {
    const minutes = Math.max(0, Math.floor(ms / 60000));
    if (minutes < 1) return "less than 1 min";
    if (minutes < 60) return `${minutes} min`;
    const hours = Math.floor(minutes / 60);
    if (hours < 48) return `${hours} h`;
    return `${Math.floor(hours / 24)} d`;
  }

  function windowText(window_) {
    const info = obj(window_);
    const closes = toMs(info.closes_at);
    if (!info.open || closes === null || closes <= Date.now()) return "window closed";
    return `window ${duration(closes - Date.now())}`;
  }

  function windowOpen(window_) {
    const info = obj(window_);
    const closes = toMs(info.closes_at);
    return Boolean(info.open) && (closes === null || closes > Date.now());
  }

  function actorName(actor) {
    const text = str(actor);
    if (text.startsWith("operator:")) return text.slice("operator:".length);
    if (text.startsWith("ai:")) return `AI (${text.slice(3)})`;
    return { rule: "rule", api: "API", phone: "the business app", system: "wahub" }[text] || text || "someone";
  }

  function contactLabel(contact) {
    const info = obj(contact);
    return str(info.name) || str(info.phone) || str(info.address) || "unknown contact";
  }

  function sectionOf(item) {
    if (item.owner === "queued") return "queued";
    if (item.owner === "assigned" && item.assignee === me.name) return "mine";
    if (item.owner === "assigned" || item.owner === "phone") return "open";
    return "resolved";
  }

  function ownerText(item) {
    if (item.owner === "assigned") return item.assignee === me.name ? "you" : str(item.assignee);
    return { queued: "queued", bot: "bot", phone: "business app" }[item.owner] || str(item.owner);
  }

  function uuid() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
    // randomUUID needs a secure context; getRandomValues does not.
    const bytes = window.crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  function showError(target, message) {
    target.textContent = message || "";
    target.hidden = !message;
  }

  // ---- the API ---------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message, data) {
      super(message);
      this.status = status;
      this.code = code;
      this.data = data;
    }
  }

  function signedOut() {
    const next = encodeURIComponent(window.location.pathname + window.location.search);
    window.location.assign(`/inbox/login?next=${next}`);
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json", "X-CSRF-Token": csrf };
    const init = { method, headers, credentials: "same-origin" };
    if (body instanceof FormData) {
      init.body = body;
    } else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(`/inbox/api${path}`, init);
    } catch {
      throw new ApiError(0, "offline", "The inbox could not be reached; check the connection and try again.");
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (response.status === 401) {
      signedOut();
      throw new ApiError(401, "signed_out", "Signed out.");
    }
    if (!response.ok) {
      const error = obj(obj(data).error);
      const message = str(error.message) || `The inbox answered ${response.status}.`;
      throw new ApiError(response.status, str(error.code), message, obj(data));
    }
    return data;
  }

  // ---- the list --------------------------------------------------------------

  function itemPreview(item) {
    const last = item.last;
    if (!last) return "no messages yet";
    const preview = str(last.preview) || `(${str(last.type) || "message"})`;
    const by = authorName(last);
    return by ? `${by}: ${preview}` : preview;
  }

  // Who wrote an outbound message, as a short label ("" for the contact's own).
  function authorName(message) {
    const by = str(message.by);
    if (by === `operator:${me.name}`) return "You";
    if (by.startsWith("operator:")) return by.slice("operator:".length);
    const labels = { bot: "Bot", phone: "Business app", api: "API", business: "Business" };
    if (labels[by]) return labels[by];
    return message.direction === "out" ? "You" : "";
  }

  function sortedItems(section) {
    const items = [...state.items.values()].filter((item) => item.section === section);
    if (section === "queued") {
      items.sort((a, b) => (toMs(a.queued_at) || 0) - (toMs(b.queued_at) || 0));
    } else {
      items.sort((a, b) => (toMs(b.updated_at) || 0) - (toMs(a.updated_at) || 0));
    }
    return items;
  }

  function renderRow(item) {
    const row = node("li", "conv");
    row.dataset.id = str(item.id);
    row.dataset.section = item.section;
    if (state.open && String(state.open.id) === String(item.id)) row.classList.add("conv--selected");
    const button = node("button", "conv__open");
    button.type = "button";
    const top = node("span", "conv__top");
    top.append(node("span", "conv__name", contactLabel(item.contact)));
    const unread = Number(item.unread) || 0;
    if (unread > 0) {
      const badge = node("span", "conv__badge", unread);
      badge.setAttribute("aria-label", `${unread} unread`);
      top.append(badge);
    }
    const meta = node("span", "conv__meta");
    if (item.section === "queued") {
      const waiting = node("span", "conv__waiting");
      waiting.dataset.since = str(toMs(item.queued_at) || "");
      meta.append(waiting);
    }
    const window_ = node("span", "conv__window");
    window_.dataset.window = JSON.stringify(obj(item.window));
    meta.append(window_, node("span", "conv__owner", ownerText(item)));
    const preview = node("span", "conv__preview");
    preview.append(window.whatsappText(itemPreview(item)));
    button.append(top, preview, meta);
    button.addEventListener("click", () => openConversation(item.id));
    row.append(button);
    return row;
  }

  function renderList() {
    const blocks = [];
    for (const [section, title] of SECTIONS) {
      const items = sortedItems(section);
      const block = node("section", "section");
      block.dataset.section = section;
      const heading = node("h2", "section__title", title);
      heading.append(node("span", "section__count", items.length));
      const rows = node("ol", "section__rows");
      rows.setAttribute("aria-label", title);
      rows.append(...items.map(renderRow));
      if (items.length === 0) rows.append(node("li", "section__empty", "nothing here"));
      block.append(heading, rows);
      blocks.push(block);
    }
    el.sections.replaceChildren(...blocks);
    tick();
  }

  function tick() {
    const now = Date.now();
    for (const waiting of el.sections.querySelectorAll(".conv__waiting")) {
      const since = Number(waiting.dataset.since);
      waiting.textContent = since ? `waiting ${duration(now - since)}` : "waiting";
    }
    for (const span of el.sections.querySelectorAll(".conv__window")) {
      const text = windowText(JSON.parse(span.dataset.window || "{}"));
      span.textContent = text;
      span.classList.toggle("conv__window--closed", text === "window closed");
    }
    const open = state.open;
    if (open) {
      renderHead();
      // The 24 h window closed while the page was open: ask what may be sent now.
      if (open.composer && open.composer.window && open.composer.window.open && !windowOpen(open.composer.window)) {
        refreshOpen();
      }
    }
  }

  function normalize(item) {
    const copy = { ...item, contact: obj(item.contact), window: obj(item.window) };
    copy.section = sectionOf(copy);
    return copy;
  }

  async function loadList() {
    const query = state.query ? `?q=${encodeURIComponent(state.query)}` : "";
    const data = await api("GET", `/conversations${query}`);
    state.items = new Map();
    for (const items of Object.values(obj(obj(data).sections))) {
      for (const item of list(items)) state.items.set(String(item.id), normalize(item));
    }
    renderList();
  }

  async function loadMe() {
    const data = obj(await api("GET", "/me"));
    const operator = obj(data.operator);
    if (operator.name) me.name = str(operator.name);
    me.admin = Boolean(operator.admin);
    state.operators = list(data.operators).map(str);
    state.languages = list(data.languages);
    state.canned = list(data.canned_replies);
    el.adminOpen.hidden = !me.admin;
  }

  // ---- the timeline ------------------------------------------------------------

  function entryKey(entry) {
    return `${str(entry.kind)}:${str(entry.id)}`;
  }

  function messagePart(entry) {
    const message = obj(entry.message);
    const type = str(entry.type) || str(message.type);
    return { type, part: obj(message[type]), message };
  }

  function entryPreview(entry) {
    if (!entry) return "a message";
    if (entry.kind === "note") return str(entry.text);
    const { type, part } = messagePart(entry);
    if (type === "text") return str(part.body);
    if (part.caption) return str(part.caption);
    if (type === "interactive") {
      const reply = obj(part[str(part.type)]);
      return str(reply.title) || str(obj(part.body).text) || "interactive message";
    }
    if (type === "template") return `template ${str(part.name)}`;
    return str(part.filename) || type || "message";
  }

  function providerIds(entry) {
    const ids = [];
    if (entry.provider_message_id) ids.push(str(entry.provider_message_id));
    const message = obj(entry.message);
    if (message.id) ids.push(str(message.id));
    ids.push(str(entry.id));
    return ids;
  }

  function findMessage(id) {
    if (!state.open || id === undefined || id === null || id === "") return null;
    return state.open.byProvider.get(str(id)) || null;
  }

  function mediaBlock(type, part) {
    const stored = obj(part.wahub_media);
    const url = safeUrl(stored.url);
    const box = node("div", `media media--${type}`);
    if (!url) {
      const why = stored.error ? `${type} not kept: ${str(stored.error)}` : `${type} (not stored)`;
      box.append(node("p", "media__missing", why));
      return box;
    }
    if (type === "image" || type === "sticker") {
      const link = node("a", "media__link");
      link.href = url;
      link.target = "_blank";
      link.rel = "noopener";
      const image = node("img", type === "sticker" ? "media__sticker" : "media__image");
      image.src = url;
      image.alt = str(part.caption) || type;
      link.append(image);
      box.append(link);
    } else if (type === "video" || type === "audio") {
      const player = node(type, `media__${type}`);
      player.controls = true;
      player.preload = "metadata";
      player.src = url;
      box.append(player);
    } else {
      const link = node("a", "media__document");
      link.href = url;
      link.setAttribute("download", str(part.filename) || "");
      link.append(node("span", "media__icon", "DOC"), node("span", "media__name", str(part.filename) || "document"));
      if (stored.size) link.append(node("span", "media__size", `${Math.ceil(Number(stored.size) / 1024)} KB`));
      box.append(link);
    }
    return box;
  }

  function textBlock(text, className) {
    const block = node("div", className || "msg__text");
    block.append(window.whatsappText(text));
    return block;
  }

  function interactiveBlock(part, direction) {
    const box = node("div", "interactive");
    const kind = str(part.type);
    const reply = obj(part[kind]);
    if (kind === "button_reply" || kind === "list_reply" || kind === "nfm_reply") {
      const label = { button_reply: "Tapped button", list_reply: "Chose from list", nfm_reply: "Sent a form" }[kind];
      box.append(node("span", "interactive__label", label));
      box.append(node("span", "interactive__choice", str(reply.title) || str(reply.name) || str(reply.id)));
      if (reply.description) box.append(node("span", "interactive__desc", str(reply.description)));
      return box;
    }
    const header = obj(part.header);
    if (header.text) box.append(node("p", "interactive__header", str(header.text)));
    if (obj(part.body).text) box.append(textBlock(obj(part.body).text));
    if (obj(part.footer).text) box.append(node("p", "interactive__footer", str(obj(part.footer).text)));
    const action = obj(part.action);
    if (kind === "button") {
      const buttons = node("ul", "interactive__buttons");
      for (const button of list(action.buttons)) {
        buttons.append(node("li", "interactive__button", str(obj(obj(button).reply).title) || str(obj(button).title)));
      }
      box.append(buttons);
    } else if (kind === "list") {
      box.append(node("p", "interactive__button", `☰ ${str(action.button) || "list"}`));
      const rows = node("ul", "interactive__rows");
      for (const section of list(action.sections)) {
        for (const row of list(obj(section).rows)) {
          const line = node("li", "interactive__row", str(obj(row).title));
          if (obj(row).description) line.append(node("span", "interactive__desc", str(obj(row).description)));
          rows.append(line);
        }
      }
      box.append(rows);
    } else if (kind === "cta_url") {
      const parameters = obj(action.parameters);
      box.append(node("p", "interactive__button", `🔗 ${str(parameters.display_text)} (${str(parameters.url)})`));
    } else {
      box.append(node("p", "interactive__label", `interactive ${kind || "message"}`));
    }
    if (direction === "in" && box.childElementCount === 0) box.append(node("p", "", "interactive message"));
    return box;
  }

  function templateParameters(part) {
    const values = [];
    for (const component of list(part.components)) {
      for (const parameter of list(obj(component).parameters)) {
        const value = obj(parameter);
        values.push(str(value.text) || str(obj(value.currency).fallback_value) || str(value.type));
      }
    }
    for (const value of list(part.parameters)) values.push(str(value));
    return values;
  }

  function templateBlock(part) {
    const box = node("div", "template");
    const language = str(obj(part.language).code || part.language);
    box.append(node("p", "template__name", `Template ${str(part.name)}${language ? ` (${language})` : ""}`));
    const values = templateParameters(part);
    if (values.length > 0) {
      const params = node("ol", "template__params");
      for (const value of values) params.append(node("li", "", value));
      box.append(params);
    }
    if (part.text) box.append(textBlock(part.text));
    return box;
  }

  function locationBlock(part) {
    const box = node("div", "location");
    const lat = Number(part.latitude);
    const lng = Number(part.longitude);
    if (part.name) box.append(node("p", "location__name", str(part.name)));
    if (part.address) box.append(node("p", "location__address", str(part.address)));
    if (Number.isFinite(lat) && Number.isFinite(lng)) {
      const link = node("a", "location__link", `Location ${lat}, ${lng}`);
      // A map is on another host: offer the coordinates to the device's own map app.
      link.href = `geo:${lat},${lng}`;
      box.append(link);
    }
    return box;
  }

  function contactsBlock(cards) {
    const box = node("ul", "cards");
    for (const card of list(cards)) {
      const info = obj(card);
      const item = node("li", "card");
      const name = obj(info.name);
      item.append(node("p", "card__name", str(name.formatted_name) || str(name.first_name) || "contact"));
      for (const phone of list(info.phones)) item.append(node("p", "card__line", `☎ ${str(obj(phone).phone)}`));
      for (const email of list(info.emails)) item.append(node("p", "card__line", `✉ ${str(obj(email).email)}`));
      if (obj(info.org).company) item.append(node("p", "card__line", str(obj(info.org).company)));
      box.append(item);
    }
    return box;
  }

  function messageContent(entry) {
    const { type, part, message } = messagePart(entry);
    const box = node("div", "msg__content");
    switch (type) {
      case "text":
        box.append(textBlock(part.body));
        break;
      case "image":
      case "sticker":
      case "video":
      case "audio":
      case "document":
        box.append(mediaBlock(type, part));
        if (part.caption) box.append(textBlock(part.caption));
        break;
      case "location":
        box.append(locationBlock(part));
        break;
      case "contacts":
        box.append(contactsBlock(message.contacts));
        break;
      case "interactive":
        box.append(interactiveBlock(part, entry.direction));
        break;
      case "button":
        box.append(node("span", "interactive__label", "Tapped button"), node("span", "interactive__choice", str(part.text)));
        break;
      case "template":
        box.append(templateBlock(part));
        break;
      case "reaction":
        box.append(node("p", "msg__text", `Reacted ${str(part.emoji) || "(removed)"} to a message`));
        break;
      case "edit":
        box.append(node("p", "msg__flag", "Edited a message:"), textBlock(editedText(part)));
        break;
      case "revoke":
        box.append(node("p", "msg__flag", "A message was deleted"));
        break;
      default:
        box.append(node("p", "msg__unsupported", `Unsupported message: ${type || "unknown"}`));
    }
    return box;
  }

  function editedText(part) {
    const message = obj(part.message);
    return str(obj(message.text).body) || str(message.body) || str(obj(part.text).body) || str(part.body);
  }

  function renderTick(tick, status) {
    tick.dataset.status = status;
    tick.setAttribute("aria-label", status);
    tick.title = status;
    tick.replaceChildren(window.tickIcon(status));
  }

  function statusOf(entry) {
    const status = str(entry.status);
    return Object.prototype.hasOwnProperty.call(STATUS_RANK, status) ? status : "queued";
  }

  function errorText(entry) {
    const error = obj(entry.error);
    if (!error.code && !error.message) return "";
    const verb = statusOf(entry) === "refused" ? "Not sent" : "Failed";
    return `${verb}: ${str(error.code)}${error.message ? ` — ${str(error.message)}` : ""}`;
  }

  function renderMessage(entry) {
    const direction = entry.direction === "out" ? "out" : "in";
    const { type } = messagePart(entry);
    const item = node("li", `entry msg msg--${direction}`);
    item.dataset.kind = "message";
    item.dataset.id = str(entry.id);
    item.dataset.direction = direction;
    item.dataset.type = type;
    const bubble = node("div", "msg__bubble");
    if (entry.reply_to !== undefined && entry.reply_to !== null && entry.reply_to !== "") {
      const quoted = node("div", "msg__quote");
      quoted.dataset.replyTo = str(entry.reply_to);
      quoted.textContent = entryPreview(findMessage(entry.reply_to));
      bubble.append(quoted);
    }
    if (direction === "out" && entry.origin === "phone") bubble.append(node("p", "msg__origin", "from the business app"));
    bubble.append(messageContent(entry));
    const error = node("p", "msg__error");
    error.hidden = true;
    bubble.append(error);
    const meta = node("div", "msg__meta");
    const flags = node("span", "msg__flags");
    if (direction === "out" && entry.by && entry.origin !== "phone") meta.append(node("span", "msg__by", authorName(entry)));
    meta.append(flags, timeNode(entry.at, "msg__time"));
    if (direction === "out") {
      const tick = node("span", "msg__tick");
      tick.setAttribute("role", "img");
      meta.append(tick);
    }
    bubble.append(meta);
    const reactions = node("div", "msg__reactions");
    reactions.hidden = true;
    const reply = node("button", "msg__reply", "Reply");
    reply.type = "button";
    reply.setAttribute("aria-label", "Reply to this message");
    reply.addEventListener("click", () => startReply(entry));
    meta.prepend(reply);
    item.append(bubble, reactions);
    applyStatus(item, entry, true);
    return item;
  }

  function applyStatus(item, entry, force) {
    const status = statusOf(entry);
    const current = item.dataset.status;
    const moves = force || !current || (!FINAL.has(current) && (FINAL.has(status) || STATUS_RANK[status] > STATUS_RANK[current]));
    if (item.dataset.direction === "out" && moves) {
      item.dataset.status = status;
      renderTick(item.querySelector(".msg__tick"), status);
    }
    const error = item.querySelector(".msg__error");
    const text = errorText(entry);
    if (text) {
      error.textContent = text;
      error.hidden = false;
    }
  }

  function eventText(entry) {
    const actor = actorName(entry.actor);
    // An operator's own changes carry a reason made from the change itself: not repeated.
    const reason = str(entry.actor).startsWith("operator:") ? "" : str(entry.reason);
    switch (entry.change) {
      case "queued":
        return `Queued by ${actor}${reason ? `: ${reason}` : ""}`;
      case "assigned":
        if (str(entry.actor) === `operator:${str(entry.assignee)}`) return `Taken by ${str(entry.assignee)}`;
        return `Assigned to ${str(entry.assignee)} by ${actor}`;
      case "released":
        return `Released by ${actor}`;
      case "resolved":
        return `Resolved by ${actor}${reason ? `: ${reason}` : ""}`;
      case "phone":
        return "Answered from the business app";
      default:
        return `${str(entry.change)} by ${actor}`;
    }
  }

  function renderEvent(entry) {
    const item = node("li", "entry event");
    item.dataset.kind = "event";
    item.dataset.id = str(entry.id);
    item.dataset.change = str(entry.change);
    const line = node("span", "event__text", eventText(entry));
    item.append(line, timeNode(entry.at, "event__time"));
    return item;
  }

  function renderNote(entry) {
    const item = node("li", "entry note");
    item.dataset.kind = "note";
    item.dataset.id = str(entry.id);
    const head = node("p", "note__head", `Note by ${str(entry.author)} · never sent`);
    item.append(head, textBlock(entry.text, "note__text"), timeNode(entry.at, "note__time"));
    return item;
  }

  function targetOf(entry) {
    const { type, part } = messagePart(entry);
    if (type === "reaction") return str(part.message_id);
    if (type === "edit" || type === "revoke") return str(part.original_message_id || part.message_id);
    return "";
  }

  // A reaction, edit or revoke changes its message; shown on its own only when
  // that message is not on the page.
  function applyToTarget(entry) {
    const target = findMessage(targetOf(entry));
    if (!target) return false;
    const item = state.open.nodes.get(entryKey(target));
    if (!item) return false;
    const { type, part } = messagePart(entry);
    if (type === "reaction") {
      const box = item.querySelector(".msg__reactions");
      const direction = entry.direction === "out" ? "out" : "in";
      let mark = box.querySelector(`[data-from="${direction}"]`);
      if (!mark) {
        mark = node("span", "reaction");
        mark.dataset.from = direction;
        box.append(mark);
      }
      mark.textContent = str(part.emoji);
      mark.title = direction === "out" ? "your reaction" : "their reaction";
      if (!part.emoji) mark.remove();
      box.hidden = box.childElementCount === 0;
    } else if (type === "edit") {
      const text = item.querySelector(".msg__content .msg__text");
      if (text) text.replaceChildren(window.whatsappText(editedText(part)));
      addFlag(item, "edited");
    } else {
      item.classList.add("msg--deleted");
      item.querySelector(".msg__content").replaceChildren(node("p", "msg__deleted", "This message was deleted"));
      addFlag(item, "deleted");
    }
    return true;
  }

  function addFlag(item, flag) {
    const flags = item.querySelector(".msg__flags");
    if (flags.querySelector(`[data-flag="${flag}"]`)) return;
    const mark = node("span", "msg__flag", flag);
    mark.dataset.flag = flag;
    flags.append(mark);
  }

  function renderEntry(entry) {
    if (entry.kind === "event") return renderEvent(entry);
    if (entry.kind === "note") return renderNote(entry);
    return renderMessage(entry);
  }

  function nearBottom() {
    const { scrollTop, scrollHeight, clientHeight } = el.scroll;
    return scrollHeight - scrollTop - clientHeight < 150;
  }

  function scrollToEnd() {
    el.scroll.scrollTop = el.scroll.scrollHeight;
  }

  function remember(entry) {
    if (entry.kind !== "message") return;
    for (const id of providerIds(entry)) state.open.byProvider.set(id, entry);
  }

  // Add entries to the open timeline (at the end, or before the first for older
  // ones); an entry already shown is updated in place instead.
  function addEntries(entries, older) {
    const open = state.open;
    const fresh = [];
    for (const entry of entries) {
      if (!entry || typeof entry !== "object") continue;
      const key = entryKey(entry);
      const existing = open.nodes.get(key);
      if (existing) {
        if (entry.kind === "message") {
          remember(entry);
          applyStatus(existing, entry, false);
        }
        continue;
      }
      remember(entry);
      const item = renderEntry(entry);
      open.nodes.set(key, item);
      fresh.push([entry, item]);
    }
    const follow = nearBottom();
    const nodes = fresh.map(([, item]) => item);
    if (older) el.timeline.prepend(...nodes);
    else el.timeline.append(...nodes);
    for (const [entry, item] of fresh) {
      if (targetOf(entry) && applyToTarget(entry)) item.hidden = true;
    }
    // Reactions and edits that arrived before their message (older page loaded later).
    for (const item of el.timeline.querySelectorAll("li.msg[data-type='reaction'], li.msg[data-type='edit'], li.msg[data-type='revoke']")) {
      if (item.hidden) continue;
      const entry = open.entryOf.get(item);
      if (entry && applyToTarget(entry)) item.hidden = true;
    }
    for (const [entry, item] of fresh) open.entryOf.set(item, entry);
    refreshQuotes();
    if (!older && follow) scrollToEnd();
    return fresh.length;
  }

  function refreshQuotes() {
    for (const quoted of el.timeline.querySelectorAll(".msg__quote")) {
      const target = findMessage(quoted.dataset.replyTo);
      if (target) quoted.textContent = entryPreview(target);
    }
  }

  // ---- the open conversation -----------------------------------------------------

  function mayReply(conversation) {
    return me.admin || (conversation.owner === "assigned" && conversation.assignee === me.name);
  }

  function renderHead() {
    const open = state.open;
    const conversation = open.conversation;
    el.convName.textContent = contactLabel(open.contact.id ? open.contact : conversation.contact);
    let who;
    if (conversation.owner === "assigned") {
      who = conversation.assignee === me.name ? "assigned to you" : `assigned to ${str(conversation.assignee)}`;
    } else {
      who = { queued: "waiting in the queue", bot: "the bot has it", phone: "answered from the business app" }[conversation.owner] || "";
    }
    el.convState.textContent = `${who} · ${windowText(conversation.window)}`;
    const mine = conversation.owner === "assigned" && conversation.assignee === me.name;
    el.take.hidden = !(conversation.owner === "queued" || conversation.owner === "bot");
    // No one to give it to (the only operator has it): no empty picker.
    const others = state.operators.some((name) => !(conversation.owner === "assigned" && conversation.assignee === name));
    el.assign.hidden = !(me.admin || mine || conversation.owner === "queued") || !others;
    el.release.hidden = !(conversation.owner === "assigned" && (mine || me.admin));
    el.resolve.hidden = !(conversation.owner !== "bot" && (mine || me.admin || conversation.owner === "queued"));
  }

  function renderAssignOptions() {
    const options = state.operators
      .filter((name) => !(state.open && state.open.conversation.assignee === name && state.open.conversation.owner === "assigned"))
      .map((name) => {
        const option = node("option", "", name === me.name ? `${name} (me)` : name);
        option.value = name;
        return option;
      });
    el.assignTo.replaceChildren(...options);
  }

  function renderComposer() {
    const open = state.open;
    const composer = obj(open.composer);
    const conversation = open.conversation;
    const noteMode = state.mode === "note";
    el.modeReply.setAttribute("aria-pressed", String(!noteMode));
    el.modeNote.setAttribute("aria-pressed", String(noteMode));
    el.composerEl.dataset.mode = state.mode;
    const canReply = Boolean(composer.can_reply);
    const closed = !windowOpen(composer.window);
    const blocked = !noteMode && !canReply && !mayReply(conversation);
    // Past the window the server still answers can_reply when a template may be sent:
    // then only the template picker is offered, never the text box.
    const templates = !noteMode && !blocked && closed;
    el.blocked.hidden = !blocked;
    if (blocked) {
      let text;
      if (conversation.owner === "assigned") text = `${str(conversation.assignee)} has this conversation.`;
      else if (conversation.owner === "queued") text = "This conversation is waiting in the queue: take it to reply.";
      else if (conversation.owner === "phone") text = "The business app is answering this conversation.";
      else text = "The bot has this conversation: take it to reply.";
      // The server's why_not says the same about the owner: shown twice it read as a stutter.
      el.blockedText.textContent = text;
      el.blockedTake.hidden = conversation.owner === "assigned" && !me.admin;
      el.blockedTake.textContent = conversation.owner === "assigned" ? "Assign to me" : "Take";
    }
    el.templates.hidden = !templates;
    if (templates) renderTemplates(composer);
    const writable = noteMode || (canReply && !closed);
    el.form.hidden = !writable;
    el.quote.hidden = noteMode || !state.replyTo;
    el.attachment.hidden = noteMode || !state.attachment;
    el.attachLabel.hidden = noteMode;
    el.cannedOpen.hidden = noteMode || cannedReplies().length === 0;
    if (!writable) closeCanned();
    el.text.placeholder = noteMode ? "Write a note for the team (never sent)" : state.attachment ? "Add a caption" : "Type a reply";
    el.send.textContent = noteMode ? "Add note" : "Send";
    if (!writable && !templates && !blocked && !noteMode) {
      el.blocked.hidden = false;
      el.blockedText.textContent = str(composer.why_not) || "You cannot reply here now.";
      el.blockedTake.hidden = true;
    }
  }

  function cannedReplies() {
    const composer = obj(state.open && state.open.composer);
    const own = list(composer.canned_replies);
    return own.length > 0 ? own : state.canned;
  }

  function renderTemplates(composer) {
    el.whyNot.textContent = str(composer.why_not) || "The 24 h window is closed: only a template can be sent.";
    const templates = list(composer.templates);
    const previous = el.templatePick.value;
    el.templatePick.replaceChildren(
      ...templates.map((template, index) => {
        const option = node("option", "", `${str(template.name)} (${str(template.language)}, ${str(template.category)})`);
        option.value = String(index);
        return option;
      }),
    );
    if (templates.length === 0) {
      el.templateParams.replaceChildren();
      el.templatePreview.replaceChildren(document.createTextNode("No approved template in this contact's language."));
      el.templateSend.disabled = true;
      return;
    }
    if (previous && Number(previous) < templates.length) el.templatePick.value = previous;
    el.templateSend.disabled = false;
    renderTemplateParams();
  }

  function chosenTemplate() {
    const templates = list(obj(state.open && state.open.composer).templates);
    return templates[Number(el.templatePick.value)] || null;
  }

  function renderTemplateParams() {
    const template = chosenTemplate();
    if (!template) return;
    // A live refresh re-renders the composer: what the operator typed stays.
    const typed = new Map(
      [...el.templateParams.querySelectorAll("input")].map((input) => [input.dataset.name, input.value]),
    );
    const fields = list(template.parameters).map((name, index) => {
      const id = `template-param-${index}`;
      const field = node("div", "templates__param");
      const label = node("label", "", `{{${str(name)}}}`);
      label.htmlFor = id;
      const input = node("input");
      input.id = id;
      input.type = "text";
      input.autocomplete = "off";
      input.dataset.name = str(name);
      input.value = typed.get(str(name)) || "";
      input.addEventListener("input", renderTemplatePreview);
      field.append(label, input);
      return field;
    });
    el.templateParams.replaceChildren(...fields);
    renderTemplatePreview();
  }

  function templateValues() {
    return [...el.templateParams.querySelectorAll("input")].map((input) => input.value);
  }

  function renderTemplatePreview() {
    const template = chosenTemplate();
    if (!template) return;
    const values = new Map();
    for (const input of el.templateParams.querySelectorAll("input")) {
      values.set(input.dataset.name, input.value);
    }
    const filled = str(template.text).replace(/\{\{\s*([^{}\s]+)\s*\}\}/g, (whole, name) => {
      const value = values.get(name);
      return value ? value : whole;
    });
    el.templatePreview.replaceChildren(window.whatsappText(filled));
  }

  function renderContact() {
    const contact = state.open.contact;
    el.contactName.textContent = str(contact.name) || "—";
    el.contactPhone.textContent = str(contact.phone) || str(contact.address) || "—";
    el.contactBsuid.textContent = str(contact.bsuid) || "—";
    const languages = state.languages.map((language) => {
      const info = typeof language === "object" && language ? language : { code: language };
      const option = node("option", "", info.name ? `${str(info.name)} (${str(info.code)})` : str(info.code));
      option.value = str(info.code);
      return option;
    });
    const unset = node("option", "", "not set");
    unset.value = "";
    el.contactLanguage.replaceChildren(unset, ...languages);
    const current = str(contact.language);
    if (current && !state.languages.some((language) => str(obj(language).code || language) === current)) {
      const option = node("option", "", current);
      option.value = current;
      el.contactLanguage.append(option);
    }
    el.contactLanguage.value = current;
    el.contactLanguageSource.textContent = contact.language_source ? `(${str(contact.language_source)})` : "";
    const tags = list(contact.tags).map((tag) => {
      const chip = node("li", "tag");
      chip.append(node("span", "tag__text", str(tag)));
      const remove = node("button", "tag__remove", "×");
      remove.type = "button";
      remove.setAttribute("aria-label", `Remove tag ${str(tag)}`);
      remove.addEventListener("click", () => saveTags(list(contact.tags).filter((other) => other !== tag)));
      chip.append(remove);
      return chip;
    });
    el.contactTags.replaceChildren(...tags);
    const consent = obj(contact.consent);
    el.contactConsent.textContent = str(consent.state) || "unknown";
    el.contactConsent.dataset.state = str(consent.state);
    el.contactLedger.replaceChildren(
      ...list(consent.ledger).map((line) => {
        const info = obj(line);
        const item = node("li", "", `${str(info.action)} (${str(info.scope)}) by ${str(info.source)} `);
        item.append(timeNode(info.at));
        return item;
      }),
    );
    renderSync(list(contact.sync));
  }

  // "Synced with": where the contact's events stand with each crm: entry that has any.
  function renderSync(entries) {
    let block = document.getElementById("contact-sync");
    if (!block) {
      const title = node("dt", "", "Synced with");
      title.id = "contact-sync-title";
      const holder = node("dd");
      holder.id = "contact-sync-holder";
      block = node("ul", "sync");
      block.id = "contact-sync";
      block.setAttribute("aria-labelledby", title.id);
      holder.append(block);
      el.contact.append(title, holder);
    }
    document.getElementById("contact-sync-title").hidden = entries.length === 0;
    document.getElementById("contact-sync-holder").hidden = entries.length === 0;
    block.replaceChildren(...entries.map(syncEntry));
  }

  function syncEntry(entry) {
    const info = obj(entry);
    const pending = Number(info.pending) || 0;
    const failed = Number(info.failed) || 0;
    const synced = info.delivered_at !== null && info.delivered_at !== undefined;
    const item = node("li", "sync__entry");
    item.dataset.endpoint = str(info.endpoint);
    item.dataset.state = failed ? "failed" : pending ? "pending" : synced ? "synced" : "linked";
    const head = node("div", "sync__head");
    head.append(node("span", "sync__name", str(info.endpoint)));
    if (info.platform && info.platform !== info.endpoint) {
      head.append(node("span", "sync__platform", str(info.platform)));
    }
    if (info.remote_id) head.append(node("span", "sync__remote", `id ${str(info.remote_id)}`));
    item.append(head);
    if (synced) {
      const line = node("p", "sync__line sync__line--synced", "synced at ");
      line.append(timeNode(info.delivered_at));
      item.append(line);
    }
    if (pending) {
      const line = node("p", "sync__line sync__line--pending", `${pending} pending`);
      if (info.disabled) {
        line.append(document.createTextNode(", the entry is disabled"));
      } else if (info.next_attempt_at !== null && info.next_attempt_at !== undefined) {
        line.append(document.createTextNode(", next try "), timeNode(info.next_attempt_at));
      }
      item.append(line);
      if (info.last_error) item.append(node("p", "sync__error", str(info.last_error)));
    }
    if (failed) item.append(node("p", "sync__line sync__line--failed", `${failed} failed`));
    if (!synced && !pending && !failed) item.append(node("p", "sync__line", "linked, nothing sent yet"));
    return item;
  }

  function setView(view) {
    el.body.dataset.view = view;
  }

  async function openConversation(id) {
    const key = String(id);
    resetComposer();
    state.mode = "reply";
    // What the socket says about it while it loads is applied once it is shown.
    state.loading = { id: key, entries: [] };
    const loading = state.loading;
    let data;
    try {
      data = obj(await api("GET", `/conversations/${encodeURIComponent(key)}`));
    } catch (error) {
      showError(el.actionError, error.message);
      return;
    }
    state.open = {
      id: key,
      conversation: normalize(obj(data.conversation)),
      contact: obj(data.contact),
      composer: obj(data.composer),
      next: data.next === undefined ? null : data.next,
      nodes: new Map(),
      byProvider: new Map(),
      entryOf: new WeakMap(),
    };
    el.body.dataset.open = key;
    el.empty.hidden = true;
    el.conversation.hidden = false;
    showError(el.actionError, "");
    el.timeline.replaceChildren();
    addEntries(list(data.timeline), false);
    if (state.loading === loading) {
      addEntries(loading.entries, false);
      state.loading = null;
    }
    el.older.hidden = state.open.next === null;
    renderHead();
    renderAssignOptions();
    renderComposer();
    renderContact();
    for (const row of el.sections.querySelectorAll("li.conv")) {
      row.classList.toggle("conv--selected", row.dataset.id === key);
    }
    setView("conversation");
    scrollToEnd();
    markRead();
  }

  async function refreshOpen() {
    const open = state.open;
    if (!open) return;
    let data;
    try {
      data = obj(await api("GET", `/conversations/${encodeURIComponent(open.id)}`));
    } catch (error) {
      showError(el.actionError, error.message);
      return;
    }
    if (state.open !== open) return;
    open.conversation = normalize(obj(data.conversation));
    open.contact = obj(data.contact);
    open.composer = obj(data.composer);
    addEntries(list(data.timeline), false);
    renderHead();
    renderAssignOptions();
    renderComposer();
    renderContact();
  }

  async function loadOlder() {
    const open = state.open;
    if (!open || open.next === null) return;
    el.older.disabled = true;
    try {
      const data = obj(await api("GET", `/conversations/${encodeURIComponent(open.id)}?before=${encodeURIComponent(open.next)}`));
      if (state.open !== open) return;
      const height = el.scroll.scrollHeight;
      addEntries(list(data.timeline), true);
      // Keep what the operator was reading in place.
      el.scroll.scrollTop += el.scroll.scrollHeight - height;
      open.next = data.next === undefined ? null : data.next;
      el.older.hidden = open.next === null;
    } catch (error) {
      showError(el.actionError, error.message);
    } finally {
      el.older.disabled = false;
    }
  }

  function closeConversation() {
    setView("list");
  }

  function lastInbound() {
    const items = el.timeline.querySelectorAll('li.msg[data-direction="in"]');
    return items.length > 0 ? items[items.length - 1].dataset.id : null;
  }

  async function markRead() {
    const open = state.open;
    const hiddenOnPhone = el.body.dataset.view === "list" && window.matchMedia("(max-width: 767px)").matches;
    if (!open || document.visibilityState !== "visible" || hiddenOnPhone) return;
    const item = state.items.get(open.id);
    if (item && item.unread) {
      item.unread = 0;
      renderList();
    }
    const messageId = lastInbound();
    if (messageId === null || state.lastRead.get(open.id) === messageId) return;
    state.lastRead.set(open.id, messageId);
    try {
      await api("POST", `/conversations/${encodeURIComponent(open.id)}/read`, { message_id: Number(messageId) || messageId });
    } catch {
      state.lastRead.delete(open.id); // tried again on the next message or visit
    }
  }

  // ---- actions -------------------------------------------------------------------

  async function act(path, body) {
    const open = state.open;
    if (!open) return;
    showError(el.actionError, "");
    try {
      const data = obj(await api("POST", `/conversations/${encodeURIComponent(open.id)}/${path}`, body));
      if (data.conversation && state.open === open) {
        upsertItem(obj(data.conversation));
      }
    } catch (error) {
      let message = error.message;
      if (error.code === "owner_conflict" && error.data) {
        const holder = str(error.data.assignee) || str(error.data.owner);
        message = holder ? `${message} (${holder} has it)` : message;
      }
      showError(el.actionError, message);
    }
    await refreshOpen();
  }

  // ---- composer ------------------------------------------------------------------

  function resetComposer() {
    state.replyTo = null;
    state.attachment = null;
    state.clientId = null;
    el.text.value = "";
    el.attach.value = "";
    showError(el.composerError, "");
    closeCanned();
    resizeComposer();
  }

  function startReply(entry) {
    state.replyTo = entry;
    state.mode = "reply";
    el.quoteText.replaceChildren(document.createTextNode(entryPreview(entry)));
    renderComposer();
    el.text.focus();
  }

  function resizeComposer() {
    el.text.style.height = "auto";
    el.text.style.height = `${Math.min(el.text.scrollHeight, 160)}px`;
  }

  async function send(event) {
    if (event) event.preventDefault();
    const open = state.open;
    if (!open || el.send.disabled) return;
    const text = el.text.value;
    showError(el.composerError, "");
    let path;
    let body;
    if (state.mode === "note") {
      if (text.trim() === "") return;
      path = "notes";
      body = { text };
    } else {
      if (!state.clientId) state.clientId = uuid();
      path = "messages";
      if (state.attachment) {
        body = { media: state.attachment.id, client_id: state.clientId };
        if (text.trim() !== "") body.caption = text;
      } else {
        if (text.trim() === "") return;
        body = { text, client_id: state.clientId };
      }
      if (state.replyTo) body.reply_to = state.replyTo.id;
    }
    el.send.disabled = true;
    try {
      const entry = await api("POST", `/conversations/${encodeURIComponent(open.id)}/${path}`, body);
      if (state.open === open) {
        resetComposer();
        renderComposer();
        if (entry && typeof entry === "object" && entry.kind) addEntries([entry], false);
        scrollToEnd();
      }
    } catch (error) {
      // The client_id stays: sending again is the same send, never a second message.
      showError(el.composerError, error.message);
    } finally {
      el.send.disabled = false;
    }
  }

  async function sendTemplate() {
    const open = state.open;
    const template = chosenTemplate();
    if (!open || !template) return;
    showError(el.composerError, "");
    if (!state.clientId) state.clientId = uuid();
    const body = {
      template: { name: str(template.name), language: str(template.language), parameters: templateValues() },
      client_id: state.clientId,
    };
    el.templateSend.disabled = true;
    try {
      const entry = await api("POST", `/conversations/${encodeURIComponent(open.id)}/messages`, body);
      state.clientId = null;
      for (const input of el.templateParams.querySelectorAll("input")) input.value = "";
      renderTemplatePreview();
      if (entry && typeof entry === "object" && entry.kind) addEntries([entry], false);
    } catch (error) {
      showError(el.composerError, error.message);
    } finally {
      el.templateSend.disabled = false;
    }
  }

  async function attachFile() {
    const file = el.attach.files && el.attach.files[0];
    if (!file) return;
    showError(el.composerError, "");
    const form = new FormData();
    form.append("file", file, file.name);
    el.attachmentName.textContent = `Uploading ${file.name}…`;
    el.attachment.hidden = false;
    el.send.disabled = true;
    try {
      const data = obj(await api("POST", "/media", form));
      state.attachment = { id: str(data.id), filename: str(data.filename) || file.name };
      state.clientId = null;
      el.attachmentName.textContent = `Attached: ${state.attachment.filename}`;
    } catch (error) {
      state.attachment = null;
      showError(el.composerError, error.message);
    } finally {
      el.send.disabled = false;
      el.attach.value = "";
      renderComposer();
    }
  }

  function openCanned() {
    const replies = cannedReplies();
    el.canned.replaceChildren(
      ...replies.map((reply) => {
        const info = obj(reply);
        const item = node("li");
        const button = node("button", "canned__item");
        button.type = "button";
        button.append(node("strong", "", str(info.title)), node("span", "", str(info.text)));
        button.addEventListener("click", () => {
          el.text.value = el.text.value ? `${el.text.value} ${str(info.text)}` : str(info.text);
          state.clientId = null;
          closeCanned();
          resizeComposer();
          el.text.focus();
        });
        item.append(button);
        return item;
      }),
    );
    el.canned.hidden = false;
    el.cannedOpen.setAttribute("aria-expanded", "true");
  }

  function closeCanned() {
    el.canned.hidden = true;
    el.cannedOpen.setAttribute("aria-expanded", "false");
  }

  // ---- contact -------------------------------------------------------------------

  async function patchContact(change) {
    const open = state.open;
    if (!open || !open.contact.id) return;
    showError(el.contactError, "");
    try {
      const data = obj(await api("PATCH", `/contacts/${encodeURIComponent(open.contact.id)}`, change));
      if (state.open !== open) return;
      const contact = data.contact ? obj(data.contact) : data.id !== undefined ? data : { ...open.contact, ...change };
      open.contact = contact;
      renderContact();
    } catch (error) {
      showError(el.contactError, error.message);
      renderContact();
    }
  }

  function saveTags(tags) {
    return patchContact({ tags });
  }

  // ---- live ----------------------------------------------------------------------

  function upsertItem(conversation) {
    const item = normalize(conversation);
    const key = String(item.id);
    const previous = state.items.get(key);
    if (previous && item.unread === undefined) item.unread = previous.unread;
    state.items.set(key, item);
    if (state.open && state.open.id === key) {
      state.open.conversation = item;
    }
    return { item, previous };
  }

  function applyEvent(event) {
    const id = str(event.id);
    if (id && state.seen.has(id)) return;
    if (id) state.seen.add(id);
    const conversation = obj(event.conversation);
    const key = str(conversation.id);
    const isOpen = state.open && state.open.id === key;
    const entry = event.entry && typeof event.entry === "object" ? event.entry : null;
    if (key) {
      const { item, previous } = upsertItem(conversation);
      const inbound = event.kind === "message" && entry && entry.direction === "in";
      if (inbound && !isOpen && previous && (Number(item.unread) || 0) <= (Number(previous.unread) || 0)) {
        item.unread = (Number(previous.unread) || 0) + 1;
      }
      if (isOpen && document.visibilityState === "visible") item.unread = 0;
      if (event.kind === "owner" && entry && entry.change === "queued") alertQueued(item);
    }
    if (!isOpen && entry && state.loading && state.loading.id === key) state.loading.entries.push(entry);
    if (isOpen) {
      if (entry) addEntries([entry], false);
      renderHead();
      if (event.kind === "owner" || event.kind === "contact") refreshOpen();
      else renderComposer();
      markRead();
    }
  }

  function handleFrame(frame) {
    switch (frame.type) {
      case "hello":
        state.helloCursor = frame.cursor;
        if (state.cursor === null) {
          state.cursor = frame.cursor;
          // Loaded before the feed's position was known: what changed meanwhile is only in a reload.
          if (state.ready) return reloadAll();
        }
        return start();
      case "activity":
        for (const event of list(frame.events)) applyEvent(obj(event));
        if (frame.cursor !== undefined) state.cursor = frame.cursor;
        renderList();
        return null;
      case "reset":
        state.cursor = state.helloCursor;
        state.seen = new Set();
        return reloadAll();
      case "signed_out":
        signedOut();
        return null;
      default:
        return null;
    }
  }

  async function reloadAll() {
    try {
      await loadList();
      if (state.open) await refreshOpen();
    } catch (error) {
      showError(el.actionError, error.message);
    }
  }

  function setConnection(connection, reason) {
    el.body.dataset.connection = connection;
    const texts = { connected: "live", connecting: "connecting…", reconnecting: "reconnecting…" };
    const unavailable = reason ? `live updates unavailable: ${reason}` : "live updates unavailable";
    el.connectionText.textContent = connection === "unavailable" ? unavailable : texts[connection];
  }

  // A refused upgrade does not tell the page why: the same address asked over HTTP does.
  async function socketRefusal() {
    let response;
    try {
      response = await fetch("/inbox/ws", { headers: { Accept: "application/json" }, credentials: "same-origin" });
    } catch {
      return "the inbox could not be reached";
    }
    if (response.status === 401) {
      signedOut();
      return "signed out";
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    return str(obj(obj(data).error).message) || `the server answered ${response.status}`;
  }

  async function socketFailed() {
    const failures = state.failures;
    state.unavailable = await socketRefusal();
    if (failures >= UNAVAILABLE_AFTER && failures === state.failures) setConnection("unavailable", state.unavailable);
  }

  function socketUrl() {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const after = state.cursor === null ? "" : `?after=${encodeURIComponent(state.cursor)}`;
    return `${scheme}//${window.location.host}/inbox/ws${after}`;
  }

  function connect() {
    window.clearTimeout(state.retryTimer);
    state.retryTimer = null;
    state.generation += 1;
    const generation = state.generation;
    state.helloCursor = null;
    const socket = new WebSocket(socketUrl());
    state.socket = socket;
    const current = () => generation === state.generation;
    let opened = false;
    socket.addEventListener("open", () => {
      if (!current()) return;
      opened = true;
      state.attempts = 0;
      state.failures = 0;
      setConnection("connected");
    });
    socket.addEventListener("message", (event) => {
      if (!current()) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return; // the server only sends JSON objects
      }
      if (!frame || typeof frame !== "object") return;
      // Frames are applied one after the other, a reload included.
      state.frames = state.frames.then(() => handleFrame(frame)).catch((error) => showError(el.actionError, error.message));
    });
    socket.addEventListener("close", () => {
      if (!current()) return;
      state.socket = null;
      if (!opened) {
        // The list does not wait for a socket that was refused.
        startWithoutLive();
        state.failures += 1;
        if (state.failures > 1) socketFailed();
      }
      scheduleReconnect();
    });
  }

  function scheduleReconnect() {
    if (state.failures >= UNAVAILABLE_AFTER) setConnection("unavailable", state.unavailable);
    else setConnection("reconnecting");
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** state.attempts);
    // Jitter keeps many open pages from reconnecting to a restarting daemon in step.
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    state.attempts += 1;
    state.retryTimer = window.setTimeout(connect, delay);
  }

  // Once: the operator and the list (each later hello resumes, a reset reloads).
  function start() {
    if (!state.starting) {
      state.starting = (async () => {
        await loadMe();
        await loadList();
        state.ready = true;
      })().catch((error) => {
        state.starting = null; // the next hello tries again
        throw error;
      });
    }
    return state.starting;
  }

  function startWithoutLive() {
    if (state.ready || state.starting) return;
    state.frames = state.frames.then(start).catch((error) => showError(el.actionError, error.message));
  }

  // ---- alerts --------------------------------------------------------------------

  function muted() {
    try {
      return window.localStorage.getItem(MUTED_KEY) === "1";
    } catch {
      return false;
    }
  }

  function renderAlertButtons() {
    const granted = "Notification" in window && Notification.permission === "granted";
    el.bell.setAttribute("aria-pressed", String(granted));
    el.bell.textContent = granted ? "Alerts on" : "Alerts off";
    el.mute.setAttribute("aria-pressed", String(muted()));
    el.mute.textContent = muted() ? "Sound off" : "Sound on";
  }

  function beep() {
    if (muted()) return;
    try {
      state.audio = state.audio || new AudioContext();
      const context = state.audio;
      const oscillator = context.createOscillator();
      const gain = context.createGain();
      oscillator.frequency.value = 880;
      gain.gain.setValueAtTime(0.0001, context.currentTime);
      gain.gain.exponentialRampToValueAtTime(0.2, context.currentTime + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, context.currentTime + 0.35);
      oscillator.connect(gain).connect(context.destination);
      oscillator.start();
      oscillator.stop(context.currentTime + 0.4);
    } catch {
      // No audio on this device: the notification and the list still show it.
    }
  }

  function alertQueued(item) {
    el.body.dataset.lastAlert = str(item.id);
    beep();
    if ("Notification" in window && Notification.permission === "granted") {
      const notification = new Notification(`Queued: ${contactLabel(item.contact)}`, {
        body: itemPreview(item),
        tag: `wahub-queued-${str(item.id)}`,
      });
      notification.addEventListener("click", () => {
        window.focus();
        openConversation(item.id);
      });
    }
  }

  // ---- admin ---------------------------------------------------------------------

  async function loadOperators() {
    showError(el.adminError, "");
    try {
      const data = await api("GET", "/operators");
      const operators = Array.isArray(data) ? data : list(obj(data).operators);
      el.adminOperators.replaceChildren(...operators.map(renderOperator));
    } catch (error) {
      showError(el.adminError, error.message);
    }
  }

  function renderOperator(operator) {
    const info = obj(operator);
    const row = node("tr");
    row.dataset.name = str(info.name);
    const admin = Boolean(info.admin !== undefined ? info.admin : info.is_admin);
    const toggle = node("button", "action", info.disabled ? "Enable" : "Disable");
    toggle.type = "button";
    toggle.addEventListener("click", async () => {
      try {
        await api("POST", `/operators/${encodeURIComponent(str(info.name))}`, { disabled: !info.disabled });
        await loadOperators();
      } catch (error) {
        showError(el.adminError, error.message);
      }
    });
    const cell = node("td");
    cell.append(toggle);
    row.append(node("td", "", str(info.name)), node("td", "", admin ? "admin" : "operator"), node("td", "", info.disabled ? "disabled" : "active"), cell);
    return row;
  }

  async function addOperator(event) {
    event.preventDefault();
    showError(el.adminError, "");
    try {
      await api("POST", "/operators", { name: el.adminName.value, password: el.adminPassword.value, admin: el.adminAdmin.checked });
      el.adminAdd.reset();
      await loadOperators();
    } catch (error) {
      showError(el.adminError, error.message);
    }
  }

  // ---- wiring --------------------------------------------------------------------

  el.composerEl = $("composer");
  el.searchText.addEventListener("input", () => {
    window.clearTimeout(state.searchTimer);
    state.searchTimer = window.setTimeout(() => {
      state.query = el.searchText.value.trim();
      loadList().catch((error) => showError(el.actionError, error.message));
    }, 250);
  });
  el.search.addEventListener("submit", (event) => event.preventDefault());
  el.back.addEventListener("click", closeConversation);
  el.contactOpen.addEventListener("click", () => setView("contact"));
  el.contactBack.addEventListener("click", () => setView("conversation"));
  el.older.addEventListener("click", loadOlder);
  el.take.addEventListener("click", () => act("take"));
  el.blockedTake.addEventListener("click", () => (state.open.conversation.owner === "assigned" ? act("assign", { operator: me.name }) : act("take")));
  el.assignButton.addEventListener("click", () => {
    if (el.assignTo.value) act("assign", { operator: el.assignTo.value });
  });
  el.release.addEventListener("click", () => act("release"));
  el.resolve.addEventListener("click", () => act("resolve"));
  el.modeReply.addEventListener("click", () => {
    state.mode = "reply";
    renderComposer();
  });
  el.modeNote.addEventListener("click", () => {
    state.mode = "note";
    renderComposer();
  });
  el.quoteCancel.addEventListener("click", () => {
    state.replyTo = null;
    renderComposer();
  });
  el.attachmentCancel.addEventListener("click", () => {
    state.attachment = null;
    state.clientId = null;
    renderComposer();
  });
  el.attach.addEventListener("change", attachFile);
  el.cannedOpen.addEventListener("click", () => (el.canned.hidden ? openCanned() : closeCanned()));
  el.form.addEventListener("submit", send);
  el.text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) send(event);
    if (event.key === "Escape") closeCanned();
  });
  el.text.addEventListener("input", () => {
    state.clientId = null; // different words are a different message
    resizeComposer();
  });
  el.templatePick.addEventListener("change", renderTemplateParams);
  el.templateSend.addEventListener("click", sendTemplate);
  el.contactLanguage.addEventListener("change", () => patchContact({ language: el.contactLanguage.value || null }));
  el.tagForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const tag = el.tagNew.value.trim();
    if (!tag || !state.open) return;
    const tags = list(state.open.contact.tags);
    el.tagNew.value = "";
    if (!tags.includes(tag)) saveTags([...tags, tag]);
  });
  el.bell.addEventListener("click", async () => {
    if ("Notification" in window && Notification.permission === "default") await Notification.requestPermission();
    renderAlertButtons();
  });
  el.mute.addEventListener("click", () => {
    try {
      window.localStorage.setItem(MUTED_KEY, muted() ? "0" : "1");
    } catch {
      // Storage disabled: the sound stays as it is.
    }
    renderAlertButtons();
  });
  // Browsers only let a page play sound after a gesture: be ready from the first click.
  document.addEventListener(
    "pointerdown",
    () => {
      try {
        state.audio = state.audio || new AudioContext();
      } catch {
        state.audio = null;
      }
    },
    { once: true },
  );
  el.adminOpen.addEventListener("click", () => {
    el.admin.showModal();
    loadOperators();
  });
  el.adminClose.addEventListener("click", () => el.admin.close());
  el.adminAdd.addEventListener("submit", addOperator);
  el.signOut.addEventListener("click", async () => {
    try {
      await fetch("/inbox/logout", { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf } });
    } finally {
      window.location.assign("/inbox/login");
    }
  });
  document.addEventListener("visibilitychange", markRead);
  window.addEventListener("online", () => {
    if (state.retryTimer !== null) connect();
  });

  el.adminOpen.hidden = !me.admin;
  renderAlertButtons();
  setConnection("connecting");
  window.setInterval(tick, TICK_MS);
  connect();
  window.setTimeout(startWithoutLive, LIVE_WAIT_MS);
})();
