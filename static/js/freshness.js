// "updated 4 s ago" per panel: ticks every second and turns stale past the threshold.
//
// A panel is touched when its data was last confirmed current: a render of new data, or
// a batch / heartbeat / poll answer for its contexts while nothing is waiting to be
// applied. The threshold follows the policy: twice the heartbeat interval (a live
// connection confirms at least that often) or twice the chosen refresh interval, plus a
// margin, whichever is longer.

import { ago } from "./format.js";

const MARGIN_MS = 5000;

export class Freshness {
  constructor(root = document) {
    this.panels = new Map();
    for (const element of root.querySelectorAll("[data-freshness]")) {
      this.panels.set(element.dataset.freshness, { element, time: element.querySelector("time"),
        at: null, staleAfter: 60000 });
    }
    this.heartbeatMs = 25000;
    setInterval(() => this.tick(), 1000);
  }

  /** Set the thresholds: `intervalFor(panel)` is the panel's refresh interval in ms. */
  configure({ heartbeatMs, intervalFor }) {
    if (heartbeatMs) this.heartbeatMs = heartbeatMs;
    for (const [name, panel] of this.panels) {
      const interval = intervalFor ? intervalFor(name) || 0 : 0;
      panel.staleAfter = Math.max(2 * this.heartbeatMs, 2 * interval) + MARGIN_MS;
    }
    this.tick();
  }

  touch(names, at = Date.now()) {
    for (const name of names) {
      const panel = this.panels.get(name);
      if (panel && (!panel.at || at > panel.at)) panel.at = at;
    }
    this.tick();
  }

  tick() {
    const now = Date.now();
    for (const panel of this.panels.values()) {
      if (!panel.at) continue;
      const age = now - panel.at;
      const text = ago(age);
      if (panel.time.textContent !== text) panel.time.textContent = text;
      panel.time.dateTime = new Date(panel.at).toISOString();
      const stale = age > panel.staleAfter;
      panel.element.classList.toggle("stale", stale);
      panel.element.dataset.stale = stale ? "true" : "false";
    }
  }
}
