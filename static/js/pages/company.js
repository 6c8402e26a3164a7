// `/companies/<uuid>/`: the profile (the detail panel, with conflict notes), emissions by
// scope and year (table and chart), and the position against the industry benchmark.
// Contexts: `company:<uuid>` and `industry:<slug>` (for its benchmarks).

import { App } from "../app.js";
import { Chart } from "../charts.js";
import { COMPANY_ENTITIES, companyContext, companyLoad } from "../company-data.js";
import { EMPTY, clock, decimal, integer } from "../format.js";
import { getJson } from "../http.js";
import { announce, flash } from "../motion.js";
import { KeyedTable, integerColumn } from "../table.js";

const companyId = document.body.dataset.company;
let industry = document.body.dataset.industry;
const METRIC = "total_tonnes";
// The detail panel keeps the latest notes of values that changed under the reader's eyes.
const MAX_NOTES = 5;

const app = new App();
const { store } = app;
let gone = false;
let benchmarkSeq = 0;

store.derive("records", ["emission_record"], () => store.all("emission_record")
  .filter((record) => record.company_id === companyId && record.year !== undefined)
  .sort((a, b) => b.year - a.year));

// The newest year that counts (a rejected record does not), as the API's latest_* say.
store.derive("latest", ["emission_record"], () => store.value("records")
  .find((record) => record.verification_status !== "rejected" && record.total_tonnes !== undefined) || null);

const emissionsTable = new KeyedTable(document.querySelector('[data-table="emissions"]'), {
  key: (row) => row.id,
  rowAttributes: (row) => ({ "data-year": row.year }),
  columns: [
    { field: "year" },
    integerColumn("scope1_tonnes"),
    integerColumn("scope2_tonnes"),
    integerColumn("scope3_tonnes"),
    integerColumn("total_tonnes"),
    { field: "verification_status" },
    { field: "source" },
  ],
});
const chart = new Chart(document.querySelector('[data-chart="emissions"]'), {
  xYears: true,
  series: [
    { label: "Scope 1" }, { label: "Scope 2" }, { label: "Scope 3" },
    { label: "Total", colour: "#1d2621", dash: [6, 4] },
  ],
});

// -- the detail panel: values, and notes when newer data replaced what was shown ----------

const FIELDS = {
  verification_status: (company) => company.verification_status || EMPTY,
  data_quality_score: (company) => (company.data_quality_score === undefined ? EMPTY : decimal(company.data_quality_score)),
  latest_year: () => { const latest = store.value("latest"); return latest ? String(latest.year) : EMPTY; },
  latest_total_tonnes: () => { const latest = store.value("latest"); return latest ? integer(latest.total_tonnes) : EMPTY; },
  is_public: (company) => (company.is_public === false ? "Not public (staff only)" : "Public"),
};
const LABELS = { verification_status: "Verification", data_quality_score: "Data quality",
  latest_year: "Latest year", latest_total_tonnes: "Latest total", is_public: "Listing",
  name: "Name", country: "Country", industry_name: "Industry" };
const shown = {};

function note(field, before, after) {
  const list = document.querySelector("[data-conflicts]");
  const li = document.createElement("li");
  li.textContent = `${LABELS[field]} was updated at ${clock(new Date())}: ${before} → ${after}.`;
  list.prepend(li);
  while (list.children.length > MAX_NOTES) list.lastElementChild.remove();
  announce(`${document.querySelector('[data-bind="name"]').textContent}: ${li.textContent}`);
}

function show(element, field, text) {
  const before = shown[field];
  if (before === text) return;
  if (element.querySelector(".sk")) element.replaceChildren();
  element.textContent = text;
  shown[field] = text;
  // The newer seq won: the panel says what changed while it was on screen.
  if (before !== undefined) {
    flash(element, null);
    note(field, before, text);
  }
}

function renderProfile(company) {
  show(document.querySelector('[data-bind="name"]'), "name", company.name || EMPTY);
  document.title = `${company.name} · Live carbon dashboards`;
  show(document.querySelector('[data-bind="country"]'), "country", company.country || EMPTY);
  const industryLink = document.querySelector('[data-bind="industry_name"]');
  if (company.industry_name) show(industryLink, "industry_name", company.industry_name);
  industryLink.href = `/industries/${company.industry}/`;
  for (const [field, value] of Object.entries(FIELDS)) {
    const element = document.querySelector(`[data-fact="${field}"]`);
    show(element, field, value(company));
    element.dataset.value = field === "verification_status" ? company.verification_status : "";
  }
}

function renderBenchmark() {
  const latest = store.value("latest");
  const benchmark = latest && store.all("industry_benchmark").find((row) =>
    row.industry === industry && row.year === latest.year && row.metric === METRIC);
  const summary = document.querySelector("[data-benchmark-summary]");
  for (const key of ["p25", "median", "p75"]) {
    const element = document.querySelector(`[data-bench="${key}"]`);
    const text = benchmark ? integer(benchmark[key]) : EMPTY;
    if (element.textContent !== text) {
      if (element.dataset.value !== undefined) flash(element, Number(benchmark && benchmark[key]) > Number(element.dataset.value) ? "up" : "down");
      element.textContent = text;
      element.dataset.value = benchmark ? String(benchmark[key]) : "";
    }
  }
  if (!benchmark) {
    summary.textContent = latest ? "No benchmark for this year yet." : "No emissions reported yet.";
    return;
  }
  const total = Number(latest.total_tonnes);
  const [p25, median, p75] = [benchmark.p25, benchmark.median, benchmark.p75].map(Number);
  const where = total < p25 ? "in the lowest quarter" : total < median ? "below the median"
    : total <= p75 ? "above the median" : "in the highest quarter";
  const text = `${latest.year}: ${integer(total)} t CO₂e, ${where} of ${benchmark.company_count} companies (median ${integer(median)} t).`;
  if (summary.textContent !== text) summary.textContent = text;
  const max = Math.max(p75 * 1.5, total * 1.1, 1);
  const pct = (value) => `${Math.min(100, (value / max) * 100)}%`;
  const iqr = document.querySelector("[data-band-iqr]");
  iqr.style.left = pct(p25);
  iqr.style.width = `calc(${pct(p75)} - ${pct(p25)})`;
  document.querySelector("[data-band-median]").style.left = pct(median);
  document.querySelector("[data-band-company]").style.left = pct(total);
}

// -- the page -----------------------------------------------------------------------------

const page = {
  cacheKey: companyContext(companyId),
  entities: [...COMPANY_ENTITIES, "industry_benchmark"],

  contexts() {
    return gone ? [] : [companyContext(companyId), `industry:${industry}`];
  },

  panelsOf(context) {
    return context.startsWith("company:") ? ["profile", "emissions", "benchmark"] : ["benchmark"];
  },

  // The industry's context is followed for its benchmarks; this company's own changes
  // come on its context (and category).
  keep(context, item) {
    return context.startsWith("company:") || item.entity === "industry_benchmark";
  },

  async load() {
    let data;
    try {
      data = await getJson(`/api/companies/${companyId}/`);
    } catch (error) {
      if (error.status === 404) {
        gone = true;
        return { cursors: {}, epoch: null };
      }
      throw error;
    }
    companyLoad(store, data);
    industry = data.industry;
    const detail = await getJson(`/api/industries/${industry}/`);
    for (const row of detail.benchmarks) {
      store.load("industry_benchmark", row.id, { ...row, industry }, detail.seq);
    }
    benchmarkSeq = detail.seq;
    const cursors = { [companyContext(companyId)]: data.seq, [`industry:${industry}`]: detail.seq };
    app.follow(this.contexts(), cursors);
    return { cursors, epoch: data.epoch };
  },

  apply(changes) {
    for (const change of changes) {
      if (change.entity !== "company" || change.id !== companyId) continue;
      if (change.op === "delete") {
        gone = true;
        app.follow([]);
      } else if (change.after.industry && change.after.industry !== industry) {
        // Moved to another industry: its benchmarks are another context.
        industry = change.after.industry;
        app.reload();
      }
    }
  },

  render() {
    const company = store.get("company", companyId);
    const banner = document.querySelector("[data-conflicts]");
    if (gone || !company) {
      if (gone && !banner.querySelector(".gone")) {
        const li = document.createElement("li");
        li.className = "gone";
        li.textContent = "This company is no longer listed. The figures below are the last ones received.";
        banner.prepend(li);
      }
      if (!company) return;
    }
    renderProfile(company);
    const records = store.value("records");
    emissionsTable.render(records);
    const ascending = [...records].reverse();
    chart.update([
      ascending.map((row) => row.year),
      ascending.map((row) => Number(row.scope1_tonnes) || 0),
      ascending.map((row) => Number(row.scope2_tonnes) || 0),
      ascending.map((row) => Number(row.scope3_tonnes) || 0),
      ascending.map((row) => Number(row.total_tonnes) || 0),
    ]);
    renderBenchmark();
  },

  view() {
    return { industry, benchmarkSeq };
  },

  restore(view) {
    industry = view.industry || industry;
  },
};

app.run(page);
