// `/industries/<slug>/`: the industry's totals, its benchmark percentiles over time, and
// its member companies ranked by their latest total. Context: `industry:<slug>` (every
// change of its companies and their records, its benchmarks, its aggregates).

import { App } from "../app.js";
import { Chart } from "../charts.js";
import { EMPTY, integer } from "../format.js";
import { getJson } from "../http.js";
import { flash } from "../motion.js";
import { KeyedTable, integerColumn } from "../table.js";

const slug = document.body.dataset.industry;
const context = `industry:${slug}`;
// Member companies shown, ranked: one screen.
const MEMBERS = 25;

const app = new App();
const { store } = app;
let year = null;
let metric = "total_tonnes";
let members = []; // company ids of the snapshot's ranking
let hasMore = false;

store.derive("benchmarks", ["industry_benchmark"], () => store.all("industry_benchmark")
  .filter((row) => row.industry === slug && row.year !== undefined)
  .sort((a, b) => a.year - b.year));

store.derive("members", ["company"], () => store.all("company")
  .filter((company) => company.industry === slug && !company._partial)
  .sort((a, b) => (Number(b.latest_total_tonnes ?? -1) - Number(a.latest_total_tonnes ?? -1))
    || a.id.localeCompare(b.id))
  .slice(0, MEMBERS));

const membersTable = new KeyedTable(document.querySelector('[data-table="members"]'), {
  key: (row) => row.id,
  rowAttributes: (row) => ({ "data-company": row.id }),
  columns: [
    { field: "rank", className: "num" },
    { field: "name", href: (row) => `/companies/${row.id}/` },
    { field: "country" },
    { field: "verification_status" },
    { field: "latest_year", className: "num" },
    integerColumn("latest_total_tonnes"),
  ],
});
const benchmarkTable = new KeyedTable(document.querySelector('[data-table="benchmarks"]'), {
  key: (row) => row.id,
  columns: [
    { field: "year" },
    integerColumn("p25"),
    integerColumn("median"),
    integerColumn("p75"),
    integerColumn("mean"),
    integerColumn("company_count"),
  ],
});
const chart = new Chart(document.querySelector('[data-chart="benchmarks"]'), {
  xYears: true,
  band: [3, 1],
  series: [
    { label: "25th percentile", colour: "#7fb08f", width: 1 },
    { label: "Median", colour: "#2f6b4f", width: 2.5 },
    { label: "75th percentile", colour: "#7fb08f", width: 1 },
    { label: "Mean", colour: "#c0792b", dash: [5, 4], width: 1.5 },
  ],
});
document.querySelector("[data-metric]").addEventListener("change", (event) => {
  metric = event.target.value;
  app.render();
});

function renderTotals() {
  const totals = store.get("aggregate", `industry:${slug}:${year}`) || {};
  const counts = store.get("aggregate", `industry:${slug}`) || {};
  const reporting = Number(totals.reporting_companies);
  const values = {
    companies: counts.companies,
    reporting_companies: totals.reporting_companies,
    total_tonnes: totals.total_tonnes,
    average: reporting ? Number(totals.total_tonnes) / reporting : null,
  };
  for (const [name, value] of Object.entries(values)) {
    const element = document.querySelector(`[data-total="${name}"]`);
    const text = value === undefined || value === null ? EMPTY : integer(value);
    if (element.textContent === text) continue;
    const before = Number(element.dataset.value);
    element.textContent = text;
    if (element.dataset.value !== undefined && Number.isFinite(before) && before !== Number(value)) {
      flash(element, Number(value) > before ? "up" : "down");
    }
    element.dataset.value = String(value);
  }
  document.querySelector('[data-bind="year"]').textContent = year ? String(year) : "";
}

const page = {
  cacheKey: context,
  entities: ["aggregate", "industry_benchmark", "company"],

  contexts() {
    return [context];
  },

  panelsOf() {
    return ["aggregates", "benchmarks", "members"];
  },

  async load() {
    const fields = "id,name,country,industry,verification_status,latest_year,latest_total_tonnes";
    const [detail, list] = await Promise.all([
      getJson(`/api/industries/${slug}/`),
      getJson(`/api/companies/?industry=${slug}&ordering=-total_emissions&page_size=${MEMBERS}&fields=${fields}`),
    ]);
    const seq = detail.seq;
    for (const row of detail.totals_by_year) {
      store.load("aggregate", `industry:${slug}:${row.year}`, row, seq);
    }
    year = detail.totals_by_year.length ? detail.totals_by_year.at(-1).year : null;
    store.load("aggregate", `industry:${slug}`, { companies: detail.company_count }, seq);
    for (const row of detail.benchmarks) store.load("industry_benchmark", row.id, { ...row, industry: slug }, seq);
    // The snapshot's ranking replaces the one we derived: companies that left it go.
    members = list.results.map((company) => String(company.id));
    for (const company of store.all("company")) {
      if (!members.includes(company.id)) store.drop("company", company.id, list.seq);
    }
    for (const company of list.results) store.load("company", company.id, company, list.seq);
    hasMore = Boolean(list.next);
    return { cursors: { [context]: Math.min(seq, list.seq) }, epoch: detail.epoch };
  },

  apply(changes) {
    let reload = false;
    const ranking = store.value("members");
    const shown = new Set(ranking.map((company) => company.id));
    // The lowest total on the page: a company we do not hold matters only above it.
    const floor = ranking.length >= MEMBERS ? Number(ranking.at(-1).latest_total_tonnes ?? -1) : -Infinity;
    for (const change of changes) {
      if (change.entity === "emission_record" && change.after) {
        const record = change.after;
        const company = store.get("company", record.company_id);
        if (!company || company._partial) {
          // Not in the ranking we hold: it may have climbed into it.
          if (Number(record.total_tonnes) > floor && record.verification_status !== "rejected") reload = true;
          continue;
        }
        if (record.year >= (company.latest_year ?? 0) && record.total_tonnes !== undefined
          && record.verification_status !== "rejected") {
          const before = Number(company.latest_total_tonnes);
          store.load("company", company.id, { latest_year: record.year, latest_total_tonnes: record.total_tonnes }, change.seq);
          // A member that went down may be overtaken by a company ranked below the page.
          if (hasMore && Number(record.total_tonnes) < before) reload = true;
        } else if (record.verification_status === "rejected" || record.year >= (company.latest_year ?? 0)) {
          reload = true; // its latest year no longer counts: only the server knows which does
        }
      } else if (change.entity === "emission_record" && !change.after) {
        reload = true;
      } else if (change.entity === "company") {
        if (change.op === "delete" && shown.has(change.id)) reload = true;
        if (change.after && change.after.industry && change.after.industry !== slug) {
          store.drop("company", change.id, change.seq);
          if (hasMore) reload = true;
        }
      }
    }
    if (reload) app.reload("industry_benchmarks");
  },

  render() {
    if (year === null && !store.value("benchmarks").length) return;
    renderTotals();
    const rows = store.value("benchmarks").filter((row) => row.metric === metric);
    benchmarkTable.render(rows);
    chart.update([
      rows.map((row) => row.year),
      rows.map((row) => Number(row.p25)),
      rows.map((row) => Number(row.median)),
      rows.map((row) => Number(row.p75)),
      rows.map((row) => Number(row.mean)),
    ]);
    membersTable.render(store.value("members").map((company, i) => ({ ...company, rank: i + 1 })));
  },

  view() {
    return { year, members, hasMore };
  },

  restore(view) {
    year = view.year ?? null;
    members = view.members || [];
    hasMore = Boolean(view.hasMore);
  },
};

app.run(page);
