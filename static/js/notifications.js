// Notifications (PROTOCOL.md `notification`): toasts for what matters, a list with an
// unread count, and acknowledgements for those that require one.
//
// - Toasts: notifications at or above the person's threshold (the policy's
//   `notification_threshold`: minor = every level, major = warning and critical,
//   critical = critical only, none = no toasts; default major), announcements, and
//   anything that requires acknowledgement. Quiet hours suppress toasts (the list keeps
//   everything).
// - Every id is shown once (retries and reconnects may repeat one).
// - Acknowledgements are queued (in localStorage, so they survive offline periods and
//   reloads) and sent when a transport that can carry them is up: the WebSocket's
//   `ack` message, or POST /api/updates/acknowledge with the SSE session.

import { clock } from "./format.js";

const LIST_KEY = "carbon.notifications";
const ACK_KEY = "carbon.acks";
// The list keeps the latest 50: enough for a working day of announcements and alerts.
const MAX_LIST = 50;
const TOAST_MS = 8000;
const LEVELS = { info: 0, warning: 1, critical: 2 };
const THRESHOLDS = { minor: 0, major: 1, critical: 2, none: 3 };

function load(key) {
  try {
    return JSON.parse(localStorage.getItem(key)) || [];
  } catch {
    return [];
  }
}

function inQuietHours(quiet, now = new Date()) {
  if (!quiet || !quiet.start || !quiet.end) return false;
  let hhmm;
  try {
    hhmm = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit", hour12: false,
      timeZone: quiet.timezone || undefined }).format(now);
  } catch {
    return false;
  }
  const { start, end } = quiet;
  return start <= end ? hhmm >= start && hhmm < end : hhmm >= start || hhmm < end;
}

export class Notifications {
  constructor({ connection }) {
    this.connection = connection;
    this.items = load(LIST_KEY);
    this.acks = load(ACK_KEY);
    this.threshold = "major";
    this.quietHours = null;
    this.toasts = document.querySelector("[data-toasts]");
    this.list = document.querySelector("[data-notification-list]");
    this.listItems = document.querySelector("[data-notification-items]");
    this.empty = document.querySelector("[data-notification-empty]");
    this.badge = document.querySelector("[data-unread]");
    this.toggle = document.querySelector("[data-notifications-toggle]");
    this.toggle.addEventListener("click", () => this.setOpen(this.list.hidden));
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !this.list.hidden) this.setOpen(false);
    });
    connection.addEventListener("notification", (event) => this.receive(event.detail));
    connection.addEventListener("ready", () => this.flushAcks());
    connection.addEventListener("hello", (event) => this.applyPolicy(event.detail.policy));
    connection.addEventListener("policy", (event) => this.applyPolicy(event.detail.policy));
    this.renderList();
  }

  applyPolicy(policy) {
    if (!policy) return;
    if (policy.notification_threshold in THRESHOLDS) this.threshold = policy.notification_threshold;
    if ("quiet_hours" in policy) this.quietHours = policy.quiet_hours;
  }

  receive(message) {
    if (!message || typeof message.id !== "string") return;
    const known = this.items.find((item) => item.id === message.id);
    if (known) return;
    const item = {
      id: message.id,
      level: message.level in LEVELS ? message.level : "info",
      title: String(message.title || ""),
      body: String(message.body || ""),
      context: message.context || null,
      kind: message.kind || null,
      requiresAck: Boolean(message.requires_ack),
      acked: false,
      read: false,
      receivedAt: Date.now(),
    };
    this.items.unshift(item);
    this.items.length = Math.min(this.items.length, MAX_LIST);
    this.save();
    this.renderList();
    if (this.shouldToast(item)) this.toast(item);
  }

  shouldToast(item) {
    if (item.requiresAck) return true;
    if (inQuietHours(this.quietHours)) return false;
    const announcement = item.kind === "announcement" || item.context === null;
    return announcement || LEVELS[item.level] >= THRESHOLDS[this.threshold];
  }

  toast(item) {
    const toast = document.createElement("div");
    toast.className = "toast";
    toast.dataset.level = item.level;
    toast.dataset.notification = item.id;
    // Critical ones interrupt a screen reader; the rest wait their turn.
    toast.setAttribute("role", item.level === "critical" ? "alert" : "status");
    const title = document.createElement("p");
    title.className = "title";
    title.textContent = item.title;
    const body = document.createElement("p");
    body.className = "body";
    body.textContent = item.body;
    const actions = document.createElement("div");
    actions.className = "actions";
    const link = contextLink(item.context);
    if (link) actions.append(link);
    const button = document.createElement("button");
    button.type = "button";
    if (item.requiresAck) {
      button.textContent = "Acknowledge";
      button.dataset.ack = item.id;
      button.addEventListener("click", () => this.acknowledge(item.id));
    } else {
      button.textContent = "Dismiss";
      button.addEventListener("click", () => toast.remove());
      // Those that need nothing from the person go away by themselves, unless hovered.
      let timer = setTimeout(() => toast.remove(), TOAST_MS);
      toast.addEventListener("pointerenter", () => clearTimeout(timer));
      toast.addEventListener("pointerleave", () => {
        timer = setTimeout(() => toast.remove(), TOAST_MS);
      });
    }
    actions.append(button);
    toast.append(title, body, actions);
    this.toasts.append(toast);
  }

  acknowledge(id) {
    const item = this.items.find((candidate) => candidate.id === id);
    if (item) {
      item.acked = true;
      item.read = true;
    }
    if (!this.acks.includes(id)) this.acks.push(id);
    this.save();
    this.flushAcks();
    for (const toast of this.toasts.querySelectorAll(`[data-notification="${CSS.escape(id)}"]`)) {
      toast.remove();
    }
    this.renderList();
  }

  flushAcks() {
    const waiting = [];
    for (const id of this.acks) if (!this.connection.ack(id)) waiting.push(id);
    this.acks = waiting;
    this.save();
  }

  setOpen(open) {
    this.list.hidden = !open;
    this.toggle.setAttribute("aria-expanded", String(open));
    if (open) {
      for (const item of this.items) item.read = true;
      this.save();
      this.renderList();
    }
  }

  renderList() {
    const unread = this.items.filter((item) => !item.read).length;
    this.badge.hidden = unread === 0;
    this.badge.textContent = String(unread);
    this.toggle.setAttribute("aria-label", `Notifications, ${unread} unread`);
    this.empty.hidden = this.items.length > 0;
    const fresh = document.createDocumentFragment();
    for (const item of this.items) {
      const li = document.createElement("li");
      li.dataset.notification = item.id;
      li.dataset.level = item.level;
      li.classList.toggle("unread", !item.read);
      const title = document.createElement("span");
      title.className = "title";
      title.textContent = item.title;
      const meta = document.createElement("span");
      meta.className = "meta";
      meta.textContent = ` ${item.level} · ${clock(item.receivedAt)}${item.acked ? " · acknowledged" : ""}`;
      li.append(title, meta);
      if (item.body) {
        const body = document.createElement("div");
        body.textContent = item.body;
        li.append(body);
      }
      if (item.requiresAck && !item.acked) {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = "Acknowledge";
        button.dataset.ack = item.id;
        button.addEventListener("click", () => this.acknowledge(item.id));
        li.append(button);
      }
      fresh.append(li);
    }
    this.listItems.replaceChildren(fresh);
  }

  save() {
    localStorage.setItem(LIST_KEY, JSON.stringify(this.items));
    localStorage.setItem(ACK_KEY, JSON.stringify(this.acks));
  }
}

function contextLink(context) {
  if (!context) return null;
  const [kind, key] = context.split(/:(.*)/s);
  const href = kind === "company" ? `/companies/${key}/` : kind === "industry" ? `/industries/${key}/` : null;
  if (!href || href === location.pathname) return null;
  const link = document.createElement("a");
  link.href = href;
  link.textContent = "Open";
  return link;
}
