// Server-Sent Events transport (PROTOCOL.md, GET /api/stream/dashboard). A stream's
// contexts are fixed by its URL, so a change of contexts (or a pause) ends it and a new
// one starts from the cursors. (POST /api/realtime/subscribe would add contexts at the
// server's head, not at our snapshot's seq, and could not remove any.)

import { sendJson } from "./http.js";
import { Transport, lowestCursor, parseMessage } from "./transport.js";

const STREAM = "/api/stream/dashboard";
const EVENTS = ["hello", "subscribed", "batch", "reset", "heartbeat", "notification",
  "maintenance", "policy", "error"];

export class SseTransport extends Transport {
  constructor(handlers) {
    super("sse", handlers);
    this.source = null;
    this.session = null;
    this.epoch = null;
  }

  open(contexts, cursors, epoch) {
    this.epoch = epoch;
    this.stream(contexts, cursors);
  }

  /** The stream takes one `since` for all its contexts, so it starts from the lowest
   * cursor; items a context already has are skipped by the store (every record
   * remembers the seq it last applied), and the manager drops frames at or below a
   * context's cursor. */
  stream(contexts, cursors) {
    this.stopStream();
    this.contexts = [...contexts];
    if (!contexts.length) return;
    const params = new URLSearchParams({ contexts: contexts.join(",") });
    const since = lowestCursor(contexts, cursors);
    if (since !== null) params.set("since", String(since));
    const source = new EventSource(`${STREAM}?${params}`);
    this.source = source;
    for (const type of EVENTS) {
      source.addEventListener(type, (event) => {
        if (event.data === undefined) return; // EventSource's own `error` event
        const message = parseMessage(event.data);
        if (message === undefined) return;
        if (message.type === "hello") {
          this.greeted = true;
          this.session = message.session;
          if (this.epoch && message.epoch !== this.epoch) {
            // SSE has no `epoch` parameter: say it the way the WebSocket would.
            this.handlers.message(message);
            for (const context of this.contexts) {
              this.handlers.message({ type: "reset", context, reason: "epoch_changed",
                epoch: message.epoch, seq: message.seq });
            }
            return;
          }
        }
        this.handlers.message(message);
      });
    }
    source.onerror = () => {
      // Refused before streaming (400/403/429/503), unreachable, or a stream that broke
      // (the browser would retry by itself): the manager reconnects with its backoff.
      this.stopStream();
      this.finish();
    };
  }

  follow(contexts, cursors) {
    if (!this.followsExactly(contexts)) this.stream(contexts, cursors);
  }

  pause() {
    this.stopStream();
  }

  resume(contexts, cursors) {
    this.stream(contexts, cursors);
  }

  ack(notificationId) {
    if (!this.session || !this.source) return false;
    sendJson("/api/updates/acknowledge", "POST", { session: this.session, notification: notificationId })
      .catch(() => {});
    return true;
  }

  stopStream() {
    if (this.source) {
      this.source.onerror = null;
      this.source.close();
      this.source = null;
    }
  }

  finish() {
    if (this.done) return;
    this.done = true;
    this.handlers.closed({ opened: this.greeted, code: 0, retryAfterMs: 0, refused: false });
  }

  close() {
    this.done = true;
    this.stopStream();
  }
}
