// Engagement events for the operators' refresh metrics (POST /api/engagement/events):
// pauses, resumes and transport fallbacks. They are gathered for a couple of seconds and
// sent together; a report that fails is dropped, since these are statistics, not data.

import { sendJson } from "./http.js";

const SEND_AFTER_MS = 2000;
const MAX_EVENTS = 20; // the endpoint's limit per report (ENGAGEMENT_MAX_EVENTS)

const queue = [];
let timer = null;

/** Record one event, e.g. engagement("pause") or engagement("transport_fallback",
 * { from_transport: "websocket", transport: "sse" }). */
export function engagement(kind, detail = {}) {
  queue.push({ kind, ...detail });
  if (queue.length > MAX_EVENTS) queue.splice(0, queue.length - MAX_EVENTS);
  if (!timer) timer = setTimeout(flush, SEND_AFTER_MS);
}

async function flush() {
  timer = null;
  const events = queue.splice(0, MAX_EVENTS);
  if (!events.length) return;
  try {
    await sendJson("/api/engagement/events", "POST", { events });
  } catch {
    // Rate limited or offline: these figures can be lost without harm.
  }
}
