// What the three transports (WebSocket, SSE, polling) share. The connection manager
// decides what to follow and from which cursors; a transport moves messages.
//
// Every transport has the same shape:
//   open(contexts, cursors, epoch)   start, following `contexts` from per-context cursors
//   follow(contexts, cursors)        follow exactly these contexts from now on
//   pause() / resume(contexts, cursors)   stop batches / continue from the cursors
//   ack(notificationId) -> bool      acknowledge a notification (false: cannot right now)
//   close()
// and calls handlers.message(msg) for each server message and handlers.closed(info) once.

export class Transport {
  constructor(kind, handlers) {
    this.kind = kind;
    this.handlers = handlers;
    this.contexts = [];
    this.greeted = false; // `hello` arrived: the transport works end to end
    this.done = false;
  }

  /** Whether `contexts` are exactly the ones followed now (in any order). */
  followsExactly(contexts) {
    return contexts.length === this.contexts.length
      && contexts.every((context) => this.contexts.includes(context));
  }
}

/** The lowest of the contexts' known cursors, or null when none is known: a stream or a
 * poll takes one cursor for all its contexts. */
export function lowestCursor(contexts, cursors) {
  const known = contexts.map((context) => cursors[context]).filter((seq) => seq !== undefined);
  return known.length ? Math.min(...known) : null;
}

/** A server message from its JSON text; undefined when it does not parse (the server
 * only sends JSON objects: anything else is dropped). */
export function parseMessage(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
