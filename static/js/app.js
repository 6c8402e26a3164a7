// The live machinery every page shares, and the order it starts in:
//   1. the page shows its last data from the cache at once (if any);
//   2. it loads its REST snapshots (each carries the `seq` it is consistent with);
//   3. the connection follows the page's contexts from those seqs;
//   4. batches queue in the scheduler, which applies them to the store when the person
//      is idle and at their chosen pace; the page re-renders from the store (tables and
//      charts patch only what changed) and the cache keeps the result.
//
// A page module supplies: cacheKey, entities (to cache), contexts(), load() -> {cursors,
// epoch} (fetch snapshots into app.store), render(), panelsOf(context), and optionally
// apply(applied, context, items) (react to the store's changes and the batch's items:
// feeds, announcements, invalidations) and keep(context, item) (which items of a context
// the page uses).

import { cacheClear, cacheGet, cachePut } from "./cache.js";
import { ConnectionManager } from "./connection.js";
import { Freshness } from "./freshness.js";
import { Notifications } from "./notifications.js";
import { Preferences, settingsForm } from "./preferences.js";
import { prefetchLinks } from "./prefetch.js";
import { CATEGORIES, UpdateScheduler, categoryOf } from "./scheduler.js";
import { connectionStatus } from "./status.js";
import { Store } from "./store.js";

// Saving the view to IndexedDB at most this often: a burst of updates is one write.
const SAVE_EVERY_MS = 1000;
// A background tab keeps its connection this long (a quick tab switch costs nothing),
// then pauses it and catches up on return.
const BACKGROUND_PAUSE_MS = 30000;
// Snapshot reloads (resets, invalidated rankings) at most this often.
const RELOAD_DEBOUNCE_MS = 300;

export class App {
  constructor() {
    const params = new URLSearchParams(location.search);
    this.store = new Store();
    this.connection = new ConnectionManager({ forced: params.get("transport") });
    this.scheduler = new UpdateScheduler({ control: document.querySelector("[data-pending]") });
    this.freshness = new Freshness();
    this.preferences = new Preferences();
    this.notifications = new Notifications({ connection: this.connection });
    this.cursors = {}; // per context: the seq the store reflects (what the cache saves)
    this.epoch = null;
    this.touched = new Set();
    connectionStatus({ connection: this.connection, scheduler: this.scheduler });
    settingsForm(this.preferences);
    // Exposed for people debugging in the console, and for the browser tests.
    globalThis.liveDashboard = this;
  }

  async run(page) {
    this.page = page;
    page.app = this;
    const cached = await cacheGet(page.cacheKey);
    if (cached) {
      this.store.import(cached.records);
      if (page.restore) page.restore(cached.view || {});
      this.epoch = cached.epoch;
      this.render();
      this.freshness.touch(this.allPanels(), cached.savedAt);
    }
    let start;
    try {
      start = await this.loadSnapshots();
    } catch {
      // Offline start (or the API is down): the cached view and its cursors, if any.
      start = cached ? { cursors: cached.cursors, epoch: cached.epoch } : { cursors: {}, epoch: null };
    }
    this.cursors = { ...start.cursors };
    this.wire();
    this.preferences.load();
    this.connection.start({ contexts: page.contexts(), cursors: start.cursors, epoch: start.epoch });
    prefetchLinks(document.querySelector("main"), { inView: Boolean(page.prefetchInView) });
  }

  async loadSnapshots() {
    const result = await this.page.load();
    if (this.epoch && result.epoch && result.epoch !== this.epoch) {
      // The cache came from another lineage of the change log: forget it, load again.
      await cacheClear();
      this.store.clear();
      this.epoch = result.epoch;
      return this.loadSnapshots();
    }
    this.epoch = result.epoch;
    for (const [context, seq] of Object.entries(result.cursors)) {
      this.cursors[context] = Math.max(this.cursors[context] || 0, seq);
    }
    this.render();
    this.freshness.touch(this.allPanels());
    this.saveSoon();
    return result;
  }

  /** Load the snapshots again (after a reset, or when a ranking cannot be derived from
   * the items alone); the repaint goes through the scheduler like any update. */
  reload(category = "company_metrics") {
    clearTimeout(this.reloadTimer);
    this.reloadTimer = setTimeout(async () => {
      try {
        const result = await this.page.load();
        this.epoch = result.epoch || this.epoch;
        this.scheduler.enqueue(category, 1, () => {
          for (const context of this.page.contexts()) this.touched.add(context);
        });
      } catch {
        // Offline: the connection catches up when it returns; the ranking waits.
      }
    }, RELOAD_DEBOUNCE_MS);
  }

  /** Follow another set of contexts; new ones start at `cursors` (their snapshot seq). */
  follow(contexts, cursors = {}) {
    for (const [context, seq] of Object.entries(cursors)) {
      if (!(context in this.cursors)) this.cursors[context] = seq;
    }
    this.connection.setContexts(contexts, cursors);
  }

  wire() {
    const { connection, scheduler, store, page } = this;
    connection.addEventListener("batch", (event) => {
      const { context, seqTo } = event.detail;
      // A page may follow a context for part of what it carries (the company page
      // follows its industry for the benchmarks): the rest must not reach the store
      // through that context's category, which may have another pace.
      const changes = page.keep ? event.detail.changes.filter((item) => page.keep(context, item))
        : event.detail.changes;
      scheduler.enqueue(categoryOf(context), changes.length, () => {
        const applied = [];
        for (const item of changes) {
          const change = store.apply(item);
          if (change) applied.push(change);
        }
        this.cursors[context] = Math.max(this.cursors[context] || 0, seqTo);
        this.touched.add(context);
        // The page sees what the store applied, and every item of the batch (an item may
        // be skipped by the store because another context's batch applied it first).
        if (page.apply) page.apply(applied, context, changes);
      });
    });
    connection.addEventListener("reset", async (event) => {
      if (event.detail.epochChanged) {
        await cacheClear();
        store.clear();
      }
      this.reload(categoryOf(event.detail.context));
    });
    connection.addEventListener("heartbeat", () => this.confirmCurrent());
    connection.addEventListener("hello", (event) => {
      this.preferences.applyPolicy(event.detail.policy);
      this.applyPreferences(); // the heartbeat interval sets the staleness thresholds
    });
    connection.addEventListener("policy", (event) => this.preferences.applyPolicy(event.detail.policy));
    scheduler.addEventListener("flushed", () => {
      this.render();
      const panels = new Set();
      for (const context of this.touched) for (const panel of page.panelsOf(context)) panels.add(panel);
      this.touched.clear();
      this.freshness.touch(panels);
      this.saveSoon();
    });
    scheduler.control.addEventListener("click", () => {
      // "Show now" in manual mode also asks the server for what it held back.
      if (CATEGORIES.some((category) => scheduler.intervals[category] === null)) connection.refresh();
    });
    this.preferences.addEventListener("change", () => this.applyPreferences());
    let hiddenTimer = null;
    document.addEventListener("visibilitychange", () => {
      clearTimeout(hiddenTimer);
      if (document.hidden) {
        hiddenTimer = setTimeout(() => connection.pause("background"), BACKGROUND_PAUSE_MS);
      } else {
        connection.resume("background");
        scheduler.flush();
      }
    });
  }

  applyPreferences() {
    for (const category of CATEGORIES) {
      this.scheduler.setInterval(category, this.preferences.intervalOf(category));
    }
    const categoryOfPanel = {};
    for (const context of this.page.contexts()) {
      for (const panel of this.page.panelsOf(context)) categoryOfPanel[panel] = categoryOf(context);
    }
    this.freshness.configure({
      heartbeatMs: this.connection.kind === "polling" ? 25000 : this.connection.heartbeatMs,
      intervalFor: (panel) => this.preferences.intervalOf(categoryOfPanel[panel] || "company_metrics"),
    });
  }

  /** A heartbeat or an empty poll answer: panels with nothing waiting are current. */
  confirmCurrent() {
    if (this.connection.state === "paused") return;
    const waiting = new Set(this.scheduler.tasks.map((task) => task.category));
    const panels = new Set();
    for (const context of this.page.contexts()) {
      if (!waiting.has(categoryOf(context))) for (const panel of this.page.panelsOf(context)) panels.add(panel);
    }
    this.freshness.touch(panels);
  }

  allPanels() {
    return [...this.freshness.panels.keys()];
  }

  render() {
    try {
      this.page.render();
    } catch (error) {
      console.error("render failed", error);
    }
  }

  saveSoon() {
    if (this.saveTimer) return;
    this.saveTimer = setTimeout(() => {
      this.saveTimer = null;
      cachePut({
        key: this.page.cacheKey,
        epoch: this.epoch,
        cursors: this.cursors,
        records: this.store.export(this.page.entities),
        view: this.page.view ? this.page.view() : {},
      });
    }, SAVE_EVERY_MS);
  }
}
