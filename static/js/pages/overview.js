// `/`: platform totals, emissions by industry, top emitters and movers, newest companies
// and the recent-changes feed. Contexts: `overview` (aggregates, new companies, major
// and critical changes) and `company:<id>` of the top emitters (their minor changes do
// not reach `overview`).

import { App } from "../app.js";
import { Chart } from "../charts.js";
import { companyIdOf, describe, totalMove } from "../describe.js";
import { clock, integer, percent } from "../format.js";
import { getJson } from "../http.js";
import { announce, flash } from "../motion.js";
import { CompanyNames } from "../names.js";
import { KeyedTable, integerColumn } from "../table.js";

const TOP = 10;
const NEWEST = 5;
const MOVERS = 5;
const FEED = 20;
const ALL_PANELS = ["totals", "industries", "top-emitters", "movers", "newest", "feed"];
const companyHref = (id) => `/companies/${id}/`;

const app = new App();
const { store } = app;
const names = new CompanyNames(store, () => app.scheduler.enqueue("company_metrics", 0, () => {}));
const industryName = (slug) => (store.get("industry", slug) || {}).name || null;

let year = null;
let feed = []; // {key, seq, item} newest first
let feedSeq = 0; // the feed snapshot's seq: items at or below it are in it already
let shownTop = []; // record ids in the top-emitters table, as last rendered
let shownFloor = -Infinity; // the lowest total among them (when the table is full)

// -- derived views ------------------------------------------------------------------------

store.derive("industryRanking", ["aggregate", "industry"], () => store.all("industry")
  .map((industry) => ({
    slug: industry.id,
    name: industry.name,
    sector: industry.sector,
    companies: (store.get("aggregate", `industry:${industry.id}`) || {}).companies ?? 0,
    total: Number((store.get("aggregate", `industry:${industry.id}:${year}`) || {}).total_tonnes || 0),
  }))
  .sort((a, b) => b.total - a.total || a.slug.localeCompare(b.slug)));

store.derive("topEmitters", ["emission_record", "company"], () => store.all("emission_record")
  .filter((record) => record.year === year && record.total_tonnes !== undefined
    && store.get("company", record.company_id))
  .sort((a, b) => Number(b.total_tonnes) - Number(a.total_tonnes) || a.id.localeCompare(b.id))
  .slice(0, TOP)
  .map((record) => ({ ...record, company: store.get("company", record.company_id) })));

store.derive("newest", ["company"], () => store.all("company")
  .filter((company) => company.created_at)
  .sort((a, b) => b.created_at.localeCompare(a.created_at) || b.id.localeCompare(a.id))
  .slice(0, NEWEST));

// -- panels -------------------------------------------------------------------------------

const industriesTable = new KeyedTable(document.querySelector('[data-table="industries"]'), {
  key: (row) => row.slug,
  rowAttributes: (row) => ({ "data-industry": row.slug }),
  columns: [
    { field: "name", href: (row) => `/industries/${row.slug}/` },
    { field: "sector" },
    integerColumn("companies"),
    integerColumn("total"),
  ],
});
const industriesChart = new Chart(document.querySelector('[data-chart="industries"]'), {
  series: [{ label: "t CO₂e" }],
  bars: true,
  xLabels: (i) => (store.value("industryRanking")[i] || {}).name || "",
});

const topTable = new KeyedTable(document.querySelector('[data-table="top-emitters"]'), {
  key: (row) => row.id,
  rowAttributes: (row) => ({ "data-company": row.company_id }),
  columns: [
    { field: "rank", className: "num" },
    { field: "name", value: (row) => row.company.name, href: (row) => companyHref(row.company_id) },
    { field: "country", value: (row) => row.company.country },
    integerColumn("total_tonnes"),
  ],
});

const moversTable = new KeyedTable(document.querySelector('[data-table="movers"]'), {
  key: (row) => row.companyId,
  rowAttributes: (row) => ({ "data-company": row.companyId }),
  columns: [
    { field: "name", value: (row) => names.name(row.companyId) || "…", href: (row) => companyHref(row.companyId) },
    { field: "move", numeric: true, format: percent },
    integerColumn("total"),
  ],
});

const newestTable = new KeyedTable(document.querySelector('[data-table="newest"]'), {
  key: (row) => row.id,
  rowAttributes: (row) => ({ "data-company": row.id }),
  columns: [
    { field: "name", href: (row) => companyHref(row.id) },
    { field: "industry", value: (row) => industryName(row.industry) || row.industry_name || row.industry },
    { field: "country" },
  ],
});

function renderTotals() {
  const platform = store.get("aggregate", `platform:${year}`) || {};
  const counts = store.get("aggregate", "platform") || {};
  const values = {
    companies: integer(counts.companies),
    reporting_companies: integer(platform.reporting_companies),
    total_tonnes: integer(platform.total_tonnes),
    scopes: [platform.scope1_tonnes, platform.scope2_tonnes, platform.scope3_tonnes].map(integer).join(" / "),
    industries: integer(store.all("industry").length),
  };
  for (const [name, text] of Object.entries(values)) {
    const element = document.querySelector(`[data-total="${name}"]`);
    if (element.textContent !== text) {
      const before = Number(element.dataset.value);
      const after = Number(name === "scopes" ? NaN : (name === "companies" ? counts.companies : platform[name]));
      element.textContent = text;
      if (element.dataset.value !== undefined && Number.isFinite(before) && Number.isFinite(after) && before !== after) {
        flash(element, after > before ? "up" : "down");
      }
      element.dataset.value = String(after);
    }
  }
  document.querySelector('[data-bind="year"]').textContent = year ? String(year) : "";
}

function movers() {
  const best = new Map();
  for (const { item } of feed) {
    const move = totalMove(item);
    const companyId = companyIdOf(item);
    if (move === null || !companyId) continue;
    const known = best.get(companyId);
    if (!known || Math.abs(move) > Math.abs(known.move)) {
      best.set(companyId, { companyId, year: item.fields.year, move, total: item.fields.total_tonnes });
    }
  }
  return [...best.values()].sort((a, b) => Math.abs(b.move) - Math.abs(a.move)).slice(0, MOVERS);
}

function renderFeed() {
  const list = document.querySelector("[data-feed]");
  const keys = new Set(feed.map((entry) => entry.key));
  for (const li of [...list.children]) if (!keys.has(li.dataset.key)) li.remove();
  let previous = null;
  for (const entry of feed) {
    let li = list.querySelector(`[data-key="${CSS.escape(entry.key)}"]`);
    const text = describe(entry.item, { name: (id) => names.name(id), industryName });
    if (!li) {
      li = document.createElement("li");
      li.dataset.key = entry.key;
      li.dataset.significance = entry.item.significance;
      li.append(document.createElement("span"), document.createElement("span"));
      li.lastChild.className = "meta";
      if (list.children.length) li.classList.add("flash");
    }
    if (li.firstChild.textContent !== text) li.firstChild.textContent = text;
    li.lastChild.textContent = `${entry.item.significance} · ${clock(entry.item.at)}`;
    const place = previous ? previous.nextElementSibling : list.firstElementChild;
    if (place !== li) list.insertBefore(li, place);
    previous = li;
  }
  document.querySelector("[data-feed-empty]").hidden = feed.length > 0;
}

// -- the page -----------------------------------------------------------------------------

const page = {
  cacheKey: "overview",
  entities: ["aggregate", "industry", "company", "emission_record"],

  contexts() {
    const companies = store.value("topEmitters").map((row) => `company:${row.company_id}`);
    return ["overview", ...new Set(companies)];
  },

  panelsOf(context) {
    return context === "overview" ? ALL_PANELS : ["top-emitters"];
  },

  async load() {
    const [overview, newest, recent] = await Promise.all([
      getJson("/api/overview/"),
      getJson("/api/companies/?ordering=-created_at&page_size=10&fields=id,name,country,industry,industry_name,created_at"),
      getJson(`/api/overview/changes/?limit=${FEED}`),
    ]);
    const seq = overview.seq;
    year = overview.year;
    store.load("aggregate", `platform:${year}`, overview.totals, seq);
    store.load("aggregate", "platform", { companies: overview.totals.companies }, seq);
    for (const row of overview.by_industry) {
      store.load("industry", row.slug, { name: row.name, sector: row.sector }, seq);
      store.load("aggregate", `industry:${row.slug}:${year}`,
        { total_tonnes: row.total_tonnes, reporting_companies: row.reporting_companies }, seq);
      store.load("aggregate", `industry:${row.slug}`, { companies: row.company_count }, seq);
    }
    // The snapshot's ranking is the truth: records no longer in it leave the store.
    const listed = new Set(overview.top_emitters.map((row) => String(row.record_id)));
    for (const record of store.all("emission_record")) if (!listed.has(record.id)) store.drop("emission_record", record.id, seq);
    for (const row of overview.top_emitters) {
      store.load("company", row.id, { name: row.name, country: row.country, industry: row.industry }, seq);
      store.load("emission_record", row.record_id,
        { company_id: String(row.id), year: row.year, total_tonnes: row.total_tonnes }, seq);
    }
    for (const company of newest.results) store.load("company", company.id, company, newest.seq);
    names.remember(recent.companies, recent.seq);
    if (recent.seq >= feedSeq) {
      const live = feed.filter((entry) => entry.seq > recent.seq);
      feed = [...live, ...recent.changes.map((item) => ({ key: `${item.seq}:${item.id}`, seq: item.seq, item }))]
        .slice(0, FEED);
      feedSeq = recent.seq;
    }
    shownTop = store.value("topEmitters").map((row) => row.id);
    const first = Math.min(seq, newest.seq, recent.seq);
    const cursors = { overview: first };
    for (const context of this.contexts()) if (context !== "overview") cursors[context] = seq;
    app.follow(this.contexts(), cursors);
    return { cursors, epoch: overview.epoch };
  },

  apply(changes, context, items) {
    let reload = false;
    for (const change of changes) {
      if (change.entity === "emission_record") {
        const was = shownTop.includes(change.id);
        const before = change.before && Number(change.before.total_tonnes);
        const after = change.after && Number(change.after.total_tonnes);
        // A top emitter that fell below the lowest total shown may have been overtaken by
        // a record we do not hold (one that never changed, so never reached us): only the
        // server's ranking can say. Above that, the ranking of what we hold is exact.
        if (was && (!change.after || change.after.year !== year || (after < before && after < shownFloor))) {
          reload = true;
        }
        if (!was && change.after && change.after.year === year && !store.get("company", change.after.company_id)) {
          const tenth = store.value("topEmitters")[TOP - 1];
          if (!tenth || after > Number(tenth.total_tonnes)) reload = true;
        }
      }
      if (change.entity === "company" && change.op === "delete") reload = true;
    }
    if (context === "overview") {
      for (const item of items) {
        const key = `${item.seq}:${item.id}`;
        if (item.entity === "aggregate" || item.seq <= feedSeq || feed.some((entry) => entry.key === key)) continue;
        feed.unshift({ key, seq: item.seq, item });
        if (item.significance !== "minor") announce(describe(item, { name: (id) => names.name(id), industryName }));
      }
      feed.sort((a, b) => b.seq - a.seq);
      feed = feed.slice(0, FEED);
    }
    if (reload) app.reload();
  },

  render() {
    if (year === null) return;
    renderTotals();
    const ranking = store.value("industryRanking");
    industriesTable.render(ranking);
    industriesChart.update([ranking.map((_, i) => i), ranking.map((row) => row.total)]);
    const top = store.value("topEmitters").map((row, i) => ({ ...row, rank: i + 1 }));
    topTable.render(top);
    shownFloor = top.length >= TOP ? Number(top.at(-1).total_tonnes) : -Infinity;
    const ids = top.map((row) => row.id);
    if (ids.join() !== shownTop.join()) {
      shownTop = ids;
      const cursors = {};
      for (const row of top) cursors[`company:${row.company_id}`] = row._seq;
      app.follow(this.contexts(), cursors);
    }
    moversTable.render(movers());
    newestTable.render(store.value("newest"));
    renderFeed();
  },

  view() {
    return { year, feed, feedSeq };
  },

  restore(view) {
    year = view.year ?? null;
    feed = view.feed || [];
    feedSeq = view.feedSeq || 0;
  },
};

app.run(page);
