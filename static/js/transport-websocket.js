// WebSocket transport (PROTOCOL.md, /ws/dashboard/updates); the shape every transport
// has is in transport.js.

import { Transport, parseMessage } from "./transport.js";

const PATH = "/ws/dashboard/updates";

// Close codes (PROTOCOL.md, and the refresh-policy extension in docs/protocol.md).
const RATE_LIMITED = 4429;
const NOT_ALLOWED = 4403;

export class WebSocketTransport extends Transport {
  constructor(handlers) {
    super("websocket", handlers);
    this.socket = null;
    this.paused = false;
  }

  open(contexts, cursors, epoch) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    try {
      this.socket = new WebSocket(`${scheme}//${location.host}${PATH}`);
    } catch (error) {
      queueMicrotask(() => this.finish(0, String(error)));
      return;
    }
    this.socket.onopen = () => {
      // Paused before the socket opened: say so first, so the subscribe sends no catch-up.
      if (this.paused) this.send({ type: "pause" });
      this.contexts = [];
      this.follow(contexts, cursors, epoch);
    };
    this.socket.onmessage = (event) => {
      const message = parseMessage(event.data);
      if (message === undefined) return;
      if (message && message.type === "hello") this.greeted = true;
      this.handlers.message(message);
    };
    this.socket.onclose = (event) => this.finish(event.code, event.reason);
    // An error is always followed by a close event, which says what happened.
    this.socket.onerror = () => {};
  }

  finish(code, reason) {
    if (this.done) return;
    this.done = true;
    const retry = /retry_after=(\d+)/.exec(reason || "");
    this.handlers.closed({
      opened: this.greeted,
      code,
      // 4429 says how long to stay away; anything else reconnects with backoff (4503
      // included: this server is going away, the next connection finds another).
      retryAfterMs: code === RATE_LIMITED && retry ? Number(retry[1]) * 1000 : 0,
      // The refresh policy does not allow this transport: move on to the next at once.
      refused: code === NOT_ALLOWED,
    });
  }

  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  follow(contexts, cursors, epoch) {
    const added = contexts.filter((context) => !this.contexts.includes(context));
    const removed = this.contexts.filter((context) => !contexts.includes(context));
    if (removed.length) this.send({ type: "unsubscribe", contexts: removed });
    if (added.length) {
      const since = {};
      for (const context of added) if (cursors[context] !== undefined) since[context] = cursors[context];
      const message = { type: "subscribe", contexts: added, since };
      if (epoch) message.epoch = epoch;
      this.send(message);
    }
    this.contexts = [...contexts];
  }

  pause() {
    this.paused = true;
    this.send({ type: "pause" });
  }

  resume(contexts, cursors) {
    this.paused = false;
    this.send({ type: "resume", since: { ...cursors } });
    this.follow(contexts, cursors);
  }

  ack(notificationId) {
    return this.send({ type: "ack", notification: notificationId });
  }

  close() {
    this.done = true;
    if (this.socket) {
      this.socket.onclose = null;
      this.socket.onmessage = null;
      this.socket.close(1000);
    }
  }
}
