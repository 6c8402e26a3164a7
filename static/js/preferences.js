// Refresh preferences per data category (real time, every 10 s ... or manually).
//
// With the preferences API (GET/PUT /api/user/refresh-preferences, docs/protocol.md)
// they live on the server, which also enforces them; the effective interval is the
// policy's (`policy.categories.<category>.interval_ms`, null for manual), as `hello`
// and `policy` messages carry it. Without that API (404), they are kept in
// localStorage and applied by the client alone.

import { getJson, sendJson } from "./http.js";
import { CATEGORIES, MODES } from "./scheduler.js";

const URL = "/api/user/refresh-preferences";
const LOCAL_KEY = "carbon.refresh";

export class Preferences extends EventTarget {
  constructor() {
    super();
    this.server = false;
    this.modes = {};
    this.policy = null;
    try {
      this.modes = JSON.parse(localStorage.getItem(LOCAL_KEY)) || {};
    } catch {
      this.modes = {};
    }
  }

  async load() {
    try {
      const body = await getJson(URL);
      this.server = true;
      for (const category of CATEGORIES) {
        const mode = body.categories && body.categories[category] && body.categories[category].mode;
        if (mode && mode !== "default") this.modes[category] = mode;
      }
      if (body.policy) this.policy = body.policy;
    } catch {
      this.server = false;
    }
    this.changed();
  }

  applyPolicy(policy) {
    if (policy && policy.categories) {
      this.policy = policy;
      this.changed();
    }
  }

  /** The mode shown in the settings form. */
  modeOf(category) {
    const chosen = this.modes[category];
    if (chosen) return chosen;
    const effective = this.policy && this.policy.categories && this.policy.categories[category];
    if (!effective) return "realtime";
    if (effective.mode === "manual") return "manual";
    const match = Object.entries(MODES).find(([, ms]) => ms === effective.interval_ms);
    return effective.mode === "realtime" || !match ? "realtime" : match[0];
  }

  /** The interval to apply in ms (0: real time, null: manual). */
  intervalOf(category) {
    const effective = this.policy && this.policy.categories && this.policy.categories[category];
    if (this.server && effective) {
      return effective.mode === "manual" ? null : effective.interval_ms || 0;
    }
    const mode = this.modeOf(category);
    return mode in MODES ? MODES[mode] : 0;
  }

  async set(category, mode) {
    this.modes[category] = mode;
    if (this.server) {
      try {
        const body = await sendJson(URL, "PUT", { categories: { [category]: { mode } } });
        if (body && body.policy) this.policy = body.policy;
      } catch (error) {
        // Refused (say, below the policy's minimum): show the server's reason.
        const detail = error.body && error.body.error && error.body.error.detail;
        this.dispatchEvent(new CustomEvent("refused", { detail }));
        delete this.modes[category];
      }
    } else {
      localStorage.setItem(LOCAL_KEY, JSON.stringify(this.modes));
    }
    this.changed();
  }

  changed() {
    this.dispatchEvent(new CustomEvent("change"));
  }
}

/** The settings popover: one select per category. */
export function settingsForm(preferences) {
  const toggle = document.querySelector("[data-settings-toggle]");
  const form = document.querySelector("[data-settings]");
  const note = document.querySelector("[data-settings-note]");
  toggle.addEventListener("click", () => {
    form.hidden = !form.hidden;
    toggle.setAttribute("aria-expanded", String(!form.hidden));
  });
  const show = () => {
    for (const select of form.querySelectorAll("select")) select.value = preferences.modeOf(select.name);
  };
  form.addEventListener("change", (event) => {
    note.textContent = "";
    preferences.set(event.target.name, event.target.value);
  });
  preferences.addEventListener("change", show);
  preferences.addEventListener("refused", (event) => {
    note.textContent = typeof event.detail === "string" ? event.detail
      : Object.values(event.detail || {}).flat().join(" ") || "Not allowed.";
  });
  show();
}
