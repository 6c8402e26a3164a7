// Polling transport, with long polls (PROTOCOL.md, GET /api/updates/latest/<cursor>).
// One cursor serves every context of a request, so a poll starts from the lowest
// per-context cursor and then follows the answer's `next`. Answers are turned into the
// same messages the streaming transports deliver (`batch` per context, `reset`,
// `notification`), so the manager handles one vocabulary.

import { HttpError, getJson } from "./http.js";
import { Transport, lowestCursor } from "./transport.js";

const LATEST = "/api/updates/latest/";
// The protocol's longest wait: one request per 25 s while nothing happens.
const WAIT_S = 25;
const LIMIT = 500;

export class PollingTransport extends Transport {
  constructor(handlers) {
    super("polling", handlers);
    this.cursor = null;
    this.epoch = null;
    this.paused = false;
    this.controller = null;
    this.generation = 0; // a restarted loop makes the old one stop at its next step
  }

  open(contexts, cursors, epoch) {
    this.epoch = epoch;
    this.restart(contexts, cursors);
  }

  restart(contexts, cursors) {
    this.contexts = [...contexts];
    this.cursor = lowestCursor(contexts, cursors);
    if (this.controller) this.controller.abort();
    this.generation += 1;
    this.loop(this.generation);
  }

  follow(contexts, cursors) {
    if (!this.followsExactly(contexts)) this.restart(contexts, cursors);
  }

  pause() {
    this.paused = true;
    if (this.controller) this.controller.abort();
    this.generation += 1;
  }

  resume(contexts, cursors) {
    this.paused = false;
    this.restart(contexts, cursors);
  }

  ack() {
    // Acknowledging over HTTP needs a session of a stream or socket; polling has none,
    // so acknowledgements wait in the queue for the next WebSocket or SSE connection.
    return false;
  }

  async loop(generation) {
    let wait = 0; // the first request answers at once: it is the catch-up
    while (!this.done && !this.paused && generation === this.generation && this.contexts.length) {
      if (this.cursor === null) {
        // No snapshot seq to start from: start at the server's head.
        try {
          const status = await getJson("/api/updates/status");
          this.cursor = status.head_seq;
          if (!this.epoch) this.epoch = status.epoch;
        } catch (error) {
          this.fail(error);
          return;
        }
      }
      const params = new URLSearchParams({
        contexts: this.contexts.join(","),
        limit: String(LIMIT),
        wait: String(wait),
      });
      if (this.epoch) params.set("epoch", this.epoch);
      this.controller = new AbortController();
      let answer;
      try {
        answer = await getJson(`${LATEST}${this.cursor}?${params}`, { signal: this.controller.signal });
      } catch (error) {
        if (generation !== this.generation) return; // aborted on purpose
        this.fail(error);
        return;
      }
      if (generation !== this.generation) return;
      this.deliver(answer);
      wait = answer.has_more ? 0 : WAIT_S;
    }
  }

  deliver(answer) {
    const sent = this.cursor;
    if (!this.greeted) {
      this.greeted = true;
      this.handlers.message({ type: "hello", transport: "polling", epoch: answer.epoch,
        seq: answer.next, policy: null });
    }
    if (answer.reset) this.epoch = answer.epoch;
    for (const message of answerMessages(answer, this.contexts, sent)) {
      this.handlers.message(message);
    }
    this.cursor = Math.max(sent, answer.next);
    // Polls double as heartbeats: the answer says where the server's head is.
    this.handlers.message({ type: "heartbeat", seq: answer.next });
  }

  fail(error) {
    if (this.done) return;
    this.done = true;
    const refused = error instanceof HttpError && error.status === 403;
    this.handlers.closed({
      opened: this.greeted,
      code: error instanceof HttpError ? error.status : 0,
      retryAfterMs: error instanceof HttpError ? error.retryAfterMs : 0,
      refused,
    });
  }

  close() {
    this.done = true;
    this.generation += 1;
    if (this.controller) this.controller.abort();
  }
}

/** A poll answer as the messages a stream would have sent: resets, one `batch` per
 * context (every item up to `next` has been returned, so each ends there; prev_seq is
 * the cursor sent, so none is a gap), then notifications. Also used to fill gaps. */
export function answerMessages(answer, contexts, sent) {
  const messages = [];
  if (answer.reset) {
    for (const context of answer.reset.contexts || contexts) {
      messages.push({ type: "reset", context, reason: answer.reset.reason,
        epoch: answer.epoch, seq: answer.reset.seq });
    }
  }
  const byContext = new Map(contexts.map((context) => [context, []]));
  for (const item of answer.changes || []) {
    if (byContext.has(item.context)) byContext.get(item.context).push(item);
  }
  if (!answer.reset && answer.next > sent) {
    for (const [context, changes] of byContext) {
      messages.push({ type: "batch", context, seq_from: sent + 1, seq_to: answer.next,
        prev_seq: sent, changes });
    }
  }
  for (const notification of answer.notifications || []) {
    messages.push({ ...notification, type: "notification" });
  }
  return messages;
}

/** Everything after `cursor` for `contexts`, page by page, as stream messages. */
export async function fetchSince(contexts, cursor, epoch, onMessage) {
  let sent = cursor;
  for (;;) {
    const params = new URLSearchParams({ contexts: contexts.join(","), limit: "1000" });
    if (epoch) params.set("epoch", epoch);
    const answer = await getJson(`${LATEST}${sent}?${params}`);
    for (const message of answerMessages(answer, contexts, sent)) onMessage(message);
    if (answer.reset || !answer.has_more || answer.next <= sent) return;
    sent = answer.next;
  }
}
