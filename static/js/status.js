// What the page says about its connection: the indicator (and `data-live-state` on
// <body>, PROTOCOL.md's values), the offline and maintenance banners, and the
// pause/resume button.

import { engagement } from "./engagement.js";
import { clock } from "./format.js";

const TRANSPORT_NAMES = { websocket: "WebSocket", sse: "SSE", polling: "polling" };

export function connectionStatus({ connection, scheduler }) {
  const body = document.body;
  const label = document.querySelector("[data-live-label]");
  const indicator = document.querySelector("[data-live-indicator]");
  const offline = document.querySelector("[data-offline-banner]");
  const offlineSince = document.querySelector("[data-offline-since]");
  const maintenance = document.querySelector("[data-maintenance-banner]");
  const pause = document.querySelector("[data-pause]");
  let everLive = false;

  connection.addEventListener("state", (event) => {
    const { state, connection: raw, transport, downSince } = event.detail;
    body.dataset.liveState = state;
    if (transport) body.dataset.transport = transport;
    if (raw === "live" || raw === "polling") everLive = true;
    const text = {
      live: `live${transport ? ` · ${TRANSPORT_NAMES[transport]}` : ""}`,
      polling: "live · polling",
      connecting: everLive ? "reconnecting…" : "connecting…",
      offline: "offline",
      paused: "paused",
    }[state];
    label.textContent = text;
    indicator.title = `Connection: ${text}`;
    // The banner follows the network, paused or not: cached data is what is shown.
    if (raw === "offline") {
      offlineSince.textContent = clock(downSince || Date.now());
      offlineSince.dateTime = new Date(downSince || Date.now()).toISOString();
      offline.hidden = false;
    } else if (raw === "live" || raw === "polling") {
      offline.hidden = true;
    }
  });

  connection.addEventListener("maintenance", (event) => {
    const { active, message, until } = event.detail;
    maintenance.hidden = !active;
    if (active) {
      const end = until ? ` Until ${clock(until)}.` : "";
      maintenance.textContent = `Maintenance: ${message || "the service is being maintained."}${end}`;
    }
  });

  const showPaused = () => {
    pause.textContent = scheduler.paused ? "Resume" : "Pause";
    pause.setAttribute("aria-pressed", String(scheduler.paused));
  };
  pause.addEventListener("click", () => {
    const paused = !scheduler.paused;
    if (paused) connection.pause("user");
    scheduler.setPaused(paused);
    if (!paused) connection.resume("user");
    engagement(paused ? "pause" : "resume");
    showPaused();
  });
  // Paused before the reload: stay paused (remembered in localStorage).
  if (scheduler.paused) connection.pause("user");
  showPaused();
}
