// The update scheduler: decides *when* received updates reach the page.
//
// Updates arrive as tasks (apply these items to the store; load this snapshot) tagged
// with a data category. They are applied:
// - at the person's chosen pace for the category (real time, every 10 s, ... or
//   manually), real time still debounced so a burst repaints once;
// - never while the person is interacting: pointer over a table, text selected, a form
//   field focused, or the page scrolling. Meanwhile a quiet "N updates, show now"
//   control appears; they apply once the person is idle (or clicks it);
// - never while the tab is hidden (the connection pauses too, after a while): on return
//   everything due applies at once;
// - never while paused (remembered across reloads), except on "show now".

export const CATEGORIES = ["company_metrics", "industry_benchmarks", "directory"];

/** The data category of a context (docs/protocol.md, refresh policy). */
export function categoryOf(context) {
  if (context === "companies") return "directory";
  if (context.startsWith("industry:")) return "industry_benchmarks";
  return "company_metrics";
}

export const MODES = { realtime: 0, "10s": 10000, "30s": 30000, "1m": 60000, "5m": 300000, manual: null };

// One repaint per burst: the publisher's batches of one change arrive within a few ms.
const DEBOUNCE_MS = 150;
// After the last interaction ends, wait this long before changing what is under the eyes.
const IDLE_MS = 500;
// A page is "scrolling" until this long after the last scroll event.
const SCROLL_SETTLE_MS = 300;
// The control appears only when updates wait longer than a blink.
const CONTROL_AFTER_MS = 400;
const PAUSE_KEY = "carbon.paused";
// Inside these, the pointer holds updates back (tables, lists and charts that move).
const HOLD_SELECTOR = "table, [data-hold-updates]";
const FIELD_SELECTOR = "input, select, textarea, [contenteditable='true']";

export class UpdateScheduler extends EventTarget {
  constructor({ control }) {
    super();
    this.control = control;
    this.tasks = []; // {category, count, run}
    this.intervals = Object.fromEntries(CATEGORIES.map((category) => [category, 0]));
    this.lastFlush = {};
    this.paused = localStorage.getItem(PAUSE_KEY) === "1";
    this.pointerOver = false;
    this.scrollingUntil = 0;
    this.idleSince = 0;
    this.timer = null;
    this.controlTimer = null;
    this.listen();
    control.addEventListener("click", () => this.flush({ force: true }));
  }

  listen() {
    document.addEventListener("pointerover", (event) => {
      this.pointerOver = Boolean(event.target.closest && event.target.closest(HOLD_SELECTOR));
      if (!this.pointerOver) this.interactionEnded();
    });
    document.documentElement.addEventListener("pointerleave", () => {
      this.pointerOver = false;
      this.interactionEnded();
    });
    document.addEventListener("selectionchange", () => this.interactionEnded());
    document.addEventListener("focusin", () => this.interactionEnded());
    document.addEventListener("focusout", () => this.interactionEnded());
    addEventListener("scroll", () => {
      this.scrollingUntil = Date.now() + SCROLL_SETTLE_MS;
      this.interactionEnded(SCROLL_SETTLE_MS);
    }, { capture: true, passive: true });
    document.addEventListener("visibilitychange", () => this.schedule());
  }

  /** Why updates are held right now, or null. */
  holdReason() {
    if (this.pointerOver) return "pointer";
    const selection = document.getSelection();
    if (selection && !selection.isCollapsed && String(selection).trim()) return "selection";
    const active = document.activeElement;
    if (active && active.matches && active.matches(FIELD_SELECTOR) && !active.closest(".site-header")) {
      return "focus";
    }
    if (Date.now() < this.scrollingUntil) return "scroll";
    return null;
  }

  interactionEnded(extra = 0) {
    this.idleSince = Date.now() + extra;
    this.schedule();
  }

  setInterval(category, ms) {
    this.intervals[category] = ms;
    this.schedule();
  }

  setPaused(paused) {
    this.paused = paused;
    localStorage.setItem(PAUSE_KEY, paused ? "1" : "0");
    if (!paused) this.flush({ force: true });
    this.schedule();
  }

  /** Queue `run` (applies `count` updates of `category`) and schedule it. */
  enqueue(category, count, run) {
    this.tasks.push({ category, count, run, at: Date.now() });
    this.schedule();
  }

  get pendingCount() {
    return this.tasks.reduce((sum, task) => sum + task.count, 0);
  }

  /** When the category's waiting tasks are due (ms epoch), or null (manual). */
  dueAt(category, firstAt) {
    const interval = this.intervals[category];
    if (interval === null) return null;
    if (!interval) return firstAt + DEBOUNCE_MS;
    return Math.max(firstAt + DEBOUNCE_MS, (this.lastFlush[category] || 0) + interval);
  }

  schedule() {
    clearTimeout(this.timer);
    this.timer = null;
    this.updateControl();
    if (!this.tasks.length || this.paused || document.hidden) return;
    const now = Date.now();
    let next = Infinity;
    const first = {};
    for (const task of this.tasks) if (!(task.category in first)) first[task.category] = task.at;
    for (const [category, at] of Object.entries(first)) {
      const due = this.dueAt(category, at);
      if (due !== null) next = Math.min(next, due);
    }
    if (next === Infinity) return;
    const held = this.holdReason();
    // Held: re-check soon (selection and focus changes are reported, a scroll is not
    // reported when it ends).
    const wait = held ? IDLE_MS : Math.max(next - now, this.idleSince + IDLE_MS - now, 0);
    this.timer = setTimeout(() => this.flush(), wait);
  }

  /** Apply what is due (`force`: everything, whatever holds it back). */
  flush({ force = false } = {}) {
    clearTimeout(this.timer);
    this.timer = null;
    if (!force && (this.paused || document.hidden || this.holdReason())) {
      this.schedule();
      return;
    }
    const now = Date.now();
    const first = {};
    for (const task of this.tasks) if (!(task.category in first)) first[task.category] = task.at;
    const due = new Set(Object.keys(first).filter((category) => {
      const at = this.dueAt(category, first[category]);
      return force || (at !== null && at <= now);
    }));
    const running = this.tasks.filter((task) => due.has(task.category));
    this.tasks = this.tasks.filter((task) => !due.has(task.category));
    for (const category of due) this.lastFlush[category] = now;
    for (const task of running) {
      try {
        task.run();
      } catch (error) {
        console.error("update failed", error);
      }
    }
    if (running.length) this.dispatchEvent(new CustomEvent("flushed", { detail: { categories: due, force } }));
    this.schedule();
  }

  updateControl() {
    const count = this.pendingCount;
    clearTimeout(this.controlTimer);
    if (!count) {
      this.control.hidden = true;
      return;
    }
    this.control.textContent = `${count} ${count === 1 ? "update" : "updates"}, show now`;
    const oldest = Math.min(...this.tasks.map((task) => task.at));
    const show = () => {
      this.control.hidden = !this.tasks.length;
    };
    const age = Date.now() - oldest;
    if (age >= CONTROL_AFTER_MS || this.paused || this.holdReason()) show();
    else this.controlTimer = setTimeout(show, CONTROL_AFTER_MS - age);
  }
}
