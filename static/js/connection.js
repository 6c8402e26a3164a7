// The connection manager: one live connection for the page, whatever the transport.
//
// - Transports in order WebSocket, SSE, polling (`?transport=` forces one; the refresh
//   policy's `allowed_transports` may rule some out). A transport that fails twice
//   before its first `hello` is given up for the next; one that worked and dropped is
//   reconnected, with exponential backoff and full jitter.
// - Per-context cursors: every (re)connection resumes each context from its cursor.
//   A batch at or below the cursor is a duplicate (dropped); a batch whose prev_seq is
//   above the cursor follows a batch we never got: it is dropped too, and the gap is
//   read over HTTP (GET /api/updates/latest/<cursor>), whatever the transport.
// - Heartbeats: silence for twice the heartbeat interval means a dead connection; a
//   heartbeat whose head moved while no batch came is checked the same way (a batch
//   may have been lost on the way).
// - Close codes: 4429 waits retry_after, 4503 reconnects (with backoff), 4403 moves on; any
//   other end (1011, 4413 slow_client, a reset) reconnects with backoff and resumes.
//
// Events: "state" {state, connection, transport}, "hello", "batch" {context, changes,
// seqTo}, "reset" {context, reason, seq, epoch}, "notification", "maintenance",
// "policy", "heartbeat", "ready" (a transport that can take acknowledgements is up).

import { Backoff } from "./backoff.js";
import { engagement } from "./engagement.js";
import { SseTransport } from "./transport-sse.js";
import { PollingTransport, fetchSince } from "./transport-polling.js";
import { WebSocketTransport } from "./transport-websocket.js";

const TRANSPORTS = { websocket: WebSocketTransport, sse: SseTransport, polling: PollingTransport };
export const ORDER = ["websocket", "sse", "polling"];
// Failures before first `hello` after which a transport is given up for the next: one
// could be a server restart, two in a row is a proxy or a policy in the way.
const FAILURES_BEFORE_FALLBACK = 2;
// A transport that has not said `hello` by then counts as failed (a WebSocket blocked by
// a proxy may neither open nor close).
const HELLO_TIMEOUT_MS = 8000;
// Down for this long (or the browser says it is offline): the page says "offline".
const OFFLINE_AFTER_MS = 4000;
// No message for this many heartbeat intervals: the connection is dead.
const SILENCE_HEARTBEATS = 2;
const DEFAULT_HEARTBEAT_MS = 25000;
// Long polls answer at least every 25 s.
const POLL_SILENCE_MS = 40000;

export class ConnectionManager extends EventTarget {
  constructor({ forced = null } = {}) {
    super();
    this.forced = ORDER.includes(forced) ? forced : null;
    this.contexts = [];
    this.cursors = {};
    this.epoch = null;
    this.allowed = null;
    this.index = 0;
    this.failures = 0;
    this.backoff = new Backoff();
    this.transport = null;
    this.connection = "connecting"; // the transport's state, pause aside
    this.pauses = new Set(); // "user", "background"
    this.downSince = null;
    this.heartbeatMs = DEFAULT_HEARTBEAT_MS;
    this.lastMessageAt = 0;
    this.framesSinceHeartbeat = 0;
    this.lastHead = 0;
    this.filling = null;
    this.timers = {};
    addEventListener("online", () => this.reconnectNow());
    addEventListener("offline", () => this.wentOffline());
    this.timers.watchdog = setInterval(() => this.watch(), 1000);
  }

  get state() {
    return this.pauses.has("user") || this.pauses.has("background") ? "paused" : this.connection;
  }

  get kind() {
    return this.transport ? this.transport.kind : null;
  }

  order() {
    if (this.forced) return [this.forced];
    return ORDER.filter((kind) => !this.allowed || this.allowed.includes(kind));
  }

  start({ contexts, cursors = {}, epoch = null }) {
    this.contexts = [...contexts];
    this.cursors = { ...cursors };
    this.epoch = epoch;
    this.connect();
  }

  /** Follow exactly `contexts`; `cursors` gives the starting seq of new ones (the seq of
   * the snapshot they were loaded from). */
  setContexts(contexts, cursors = {}) {
    for (const context of contexts) {
      if (!this.contexts.includes(context) && cursors[context] !== undefined) {
        this.cursors[context] = cursors[context];
      }
    }
    for (const context of this.contexts) {
      if (!contexts.includes(context)) delete this.cursors[context];
    }
    this.contexts = [...contexts];
    if (this.transport && !this.pauses.size) this.transport.follow(this.contexts, this.cursors);
  }

  pause(reason = "user") {
    const was = this.pauses.size;
    this.pauses.add(reason);
    if (!was && this.transport) this.transport.pause();
    this.emitState();
  }

  resume(reason = "user") {
    if (!this.pauses.has(reason)) return;
    this.pauses.delete(reason);
    if (!this.pauses.size && this.transport) this.transport.resume(this.contexts, this.cursors);
    else if (!this.pauses.size && !this.transport) this.reconnectNow();
    this.emitState();
  }

  /** Acknowledge a notification now if the transport can; false: queue it. */
  ack(notificationId) {
    return this.transport && this.transport.greeted ? this.transport.ack(notificationId) : false;
  }

  /** Read whatever the contexts missed (manual refresh, "show now" in manual mode). */
  refresh() {
    this.fillGap(this.contexts);
  }

  // -- connecting ----------------------------------------------------------------------

  connect() {
    clearTimeout(this.timers.retry);
    clearTimeout(this.timers.hello);
    if (!navigator.onLine) {
      this.wentOffline();
      return;
    }
    const order = this.order();
    const kind = order[this.index % order.length];
    if (this.pauses.size && kind !== "websocket") {
      // Paused on a transport without a pause message: stay away until resumed.
      this.transport = null;
      this.emitState();
      return;
    }
    const transport = new TRANSPORTS[kind]({
      message: (message) => this.onMessage(transport, message),
      closed: (info) => this.onClosed(transport, info),
    });
    this.transport = transport;
    this.setConnection("connecting");
    transport.open(this.contexts, this.cursors, this.epoch);
    if (this.pauses.size) transport.pause();
    this.timers.hello = setTimeout(() => {
      if (this.transport === transport && !transport.greeted) {
        transport.close();
        this.onClosed(transport, { opened: false, code: 0, retryAfterMs: 0, refused: false });
      }
    }, HELLO_TIMEOUT_MS);
  }

  reconnectNow() {
    if (this.transport && this.transport.greeted) return;
    if (this.transport) this.transport.close();
    this.transport = null;
    this.backoff.reset();
    this.connect();
  }

  wentOffline() {
    if (this.transport) this.transport.close();
    this.transport = null;
    clearTimeout(this.timers.retry);
    this.downSince = this.downSince || Date.now();
    this.setConnection("offline");
    // In case the browser never says "online" again on its own: keep trying, slowly.
    this.timers.retry = setTimeout(() => this.connect(), this.backoff.next() + 2000);
  }

  onClosed(transport, info) {
    if (transport !== this.transport) return;
    this.transport = null;
    clearTimeout(this.timers.hello);
    let delay;
    if (info.opened) {
      this.failures = 0;
      delay = info.retryAfterMs || this.backoff.next();
    } else {
      this.failures += 1;
      if (info.refused || this.failures >= FAILURES_BEFORE_FALLBACK) {
        // Give this transport up for the next (after the last: start again at the top).
        const order = this.order();
        const from = order[this.index % order.length];
        this.index = (this.index + 1) % order.length;
        const to = order[this.index];
        if (to !== from) engagement("transport_fallback", { from_transport: from, transport: to });
        this.failures = 0;
        delay = info.retryAfterMs || 0;
      } else {
        delay = info.retryAfterMs || this.backoff.next();
      }
    }
    this.downSince = this.downSince || Date.now();
    this.setConnection(navigator.onLine ? "connecting" : "offline");
    clearTimeout(this.timers.offline);
    this.timers.offline = setTimeout(() => {
      if (!this.transport || !this.transport.greeted) this.setConnection("offline");
    }, Math.max(0, this.downSince + OFFLINE_AFTER_MS - Date.now()));
    this.timers.retry = setTimeout(() => this.connect(), delay);
  }

  watch() {
    const transport = this.transport;
    if (!transport || !transport.greeted || this.pauses.size) return;
    const limit = transport.kind === "polling"
      ? POLL_SILENCE_MS : this.heartbeatMs * SILENCE_HEARTBEATS + 5000;
    if (Date.now() - this.lastMessageAt > limit) {
      transport.close();
      this.onClosed(transport, { opened: true, code: 0, retryAfterMs: 0, refused: false });
    }
  }

  // -- messages ------------------------------------------------------------------------

  onMessage(transport, message) {
    if (transport !== this.transport || !message || typeof message.type !== "string") return;
    this.lastMessageAt = Date.now();
    switch (message.type) {
      case "hello":
        this.onHello(transport, message);
        break;
      case "batch":
        this.onBatch(message);
        break;
      case "reset":
        this.onReset(message);
        break;
      case "heartbeat":
        this.onHeartbeat(message);
        break;
      case "policy":
        this.applyPolicy(message.policy);
        this.emit("policy", message);
        break;
      case "notification":
      case "maintenance":
        this.emit(message.type, message);
        break;
      default:
        // subscribed, pong, error: nothing to do (errors are logged for developers).
        if (message.type === "error") console.warn("live update error", message);
    }
  }

  onHello(transport, message) {
    clearTimeout(this.timers.hello);
    clearTimeout(this.timers.offline);
    this.backoff.reset();
    this.failures = 0;
    this.downSince = null;
    this.lastHead = message.seq || 0;
    this.framesSinceHeartbeat = 0;
    this.applyPolicy(message.policy);
    if (!this.epoch) this.epoch = message.epoch;
    this.setConnection(transport.kind === "polling" ? "polling" : "live");
    this.emit("hello", message);
    if (transport.kind !== "polling") this.emit("ready", {});
  }

  applyPolicy(policy) {
    if (!policy) return;
    if (policy.heartbeat_ms) this.heartbeatMs = policy.heartbeat_ms;
    if (Array.isArray(policy.allowed_transports) && policy.allowed_transports.length) {
      const current = this.order()[this.index % this.order().length];
      this.allowed = policy.allowed_transports;
      const index = this.order().indexOf(current);
      this.index = index >= 0 ? index : 0;
    }
  }

  onBatch(message) {
    const context = message.context;
    if (!this.contexts.includes(context) || !Array.isArray(message.changes)) return;
    const cursor = this.cursors[context] ?? 0;
    if (message.seq_to <= cursor) return; // already have all of it
    if (message.prev_seq > cursor) {
      // A batch between our cursor and this one never reached us: read the gap from the
      // log (this frame's items come with it) instead of applying out of order.
      this.fillGap([context]);
      return;
    }
    this.cursors[context] = message.seq_to;
    this.framesSinceHeartbeat += 1;
    const changes = message.changes.filter((item) => item.seq > cursor);
    this.emit("batch", { context, changes, seqTo: message.seq_to });
  }

  onReset(message) {
    if (!this.contexts.includes(message.context)) return;
    this.cursors[message.context] = message.seq;
    const epochChanged = Boolean(message.epoch && this.epoch && message.epoch !== this.epoch);
    if (message.epoch) this.epoch = message.epoch;
    this.emit("reset", { ...message, epochChanged });
  }

  onHeartbeat(message) {
    const head = Number(message.seq) || 0;
    // The head moved, but not a single batch arrived since the last heartbeat: most
    // likely nothing was published for our contexts, but a lost frame looks the same.
    // One cheap read from our cursors tells.
    if (this.kind !== "polling" && head > this.lastHead && this.framesSinceHeartbeat === 0) {
      this.fillGap(this.contexts);
    }
    this.lastHead = Math.max(this.lastHead, head);
    this.framesSinceHeartbeat = 0;
    this.emit("heartbeat", message);
  }

  async fillGap(contexts) {
    if (this.filling) {
      this.filling.again = true;
      return;
    }
    const wanted = contexts.filter((context) => this.contexts.includes(context));
    if (!wanted.length) return;
    this.filling = { again: false };
    const cursor = Math.min(...wanted.map((context) => this.cursors[context] ?? 0));
    try {
      await fetchSince(wanted, cursor, this.epoch, (message) => {
        if (message.type === "batch") this.onBatch(message);
        else if (message.type === "reset") this.onReset(message);
        else if (message.type === "notification") this.emit("notification", message);
      });
    } catch {
      // Unreachable: the transport's own reconnection will catch up from the cursors.
    } finally {
      const again = this.filling.again;
      this.filling = null;
      if (again) this.fillGap(this.contexts);
    }
  }

  // -- state ---------------------------------------------------------------------------

  setConnection(connection) {
    if (connection === this.connection) return;
    this.connection = connection;
    this.emitState();
  }

  emitState() {
    this.emit("state", {
      state: this.state,
      connection: this.connection,
      transport: this.transport && this.transport.greeted ? this.transport.kind : null,
      downSince: this.downSince,
    });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
