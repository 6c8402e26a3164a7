// `/companies/`: the directory, searchable, filterable and paged (cursor pages of the
// API). Contexts: `companies` (inserts, deletes and profile changes of every company)
// and `company:<id>` of the rows on screen (their emission totals).

import { App } from "../app.js";
import { getJson } from "../http.js";
import { announce } from "../motion.js";
import { KeyedTable, integerColumn } from "../table.js";

// 25 rows: the page's company contexts plus `companies` stay well under the 50
// subscriptions a connection may hold.
const PAGE_SIZE = 25;
const SEARCH_DEBOUNCE_MS = 300;
const FIELDS = "id,name,country,industry,industry_name,is_public,verification_status,data_quality_score,latest_year,latest_total_tonnes,created_at";
const FILTERS = ["search", "industry", "verification_status", "ordering"];

const industryNames = JSON.parse(document.getElementById("industry-names").textContent);
const form = document.querySelector("[data-filters]");
const app = new App();
const { store } = app;

let query = readQuery();
let cursor = null; // the API cursor of the page shown (null: the first)
let next = null; // the API cursor of the page after it
let members = []; // company ids on this page, in the snapshot's order
let listSeq = 0;

function readQuery() {
  const params = new URLSearchParams(location.search);
  const out = {};
  for (const name of FILTERS) {
    const value = params.get(name);
    if (value) out[name] = value;
  }
  out.ordering = out.ordering || "name";
  for (const name of FILTERS) if (form.elements[name]) form.elements[name].value = out[name] || "";
  return out;
}

function cacheKeyOf() {
  return `directory?${new URLSearchParams(query)}&cursor=${cursor || ""}`;
}

// -- which companies belong on this page, in which order ------------------------------------

function matches(company) {
  if (query.industry && company.industry !== query.industry) return false;
  if (query.verification_status && company.verification_status !== query.verification_status) return false;
  if (query.search && !(company.name || "").toLowerCase().includes(query.search.toLowerCase())) return false;
  return true;
}

function compare(a, b) {
  const total = (company) => Number(company.latest_total_tonnes ?? -1);
  switch (query.ordering) {
    case "-name": return compareNames(b, a);
    case "total_emissions": return total(a) - total(b) || a.id.localeCompare(b.id);
    case "-total_emissions": return total(b) - total(a) || b.id.localeCompare(a.id);
    case "-created_at": return (b.created_at || "").localeCompare(a.created_at || "") || b.id.localeCompare(a.id);
    default: return compareNames(a, b);
  }
}

function compareNames(a, b) {
  return (a.name || "").localeCompare(b.name || "", "en", { sensitivity: "base" }) || a.id.localeCompare(b.id);
}

/** Where a company not on the page would go: on it if it sorts before the last row, or
 * if this is the last page and it has room. */
function belongs(company, rows) {
  if (!rows.length) return !next;
  if (compare(company, rows.at(-1)) < 0) return !cursor || compare(company, rows[0]) >= 0;
  return !next && rows.length < PAGE_SIZE;
}

store.derive("rows", ["company"], () => members
  .map((id) => store.get("company", id))
  .filter((company) => company && matches(company))
  .sort(compare));

const table = new KeyedTable(document.querySelector('[data-table="directory"]'), {
  key: (row) => row.id,
  rowAttributes: (row) => ({ "data-company": row.id }),
  columns: [
    { field: "name", href: (row) => `/companies/${row.id}/` },
    { field: "industry", value: (row) => industryNames[row.industry] || row.industry_name || row.industry },
    { field: "country" },
    { field: "verification_status" },
    { field: "data_quality_score", numeric: true },
    { field: "latest_year", className: "num" },
    integerColumn("latest_total_tonnes"),
  ],
});

// -- filters and pages --------------------------------------------------------------------

let searchTimer = null;
form.addEventListener("input", (event) => {
  clearTimeout(searchTimer);
  const apply = () => {
    const changed = {};
    for (const name of FILTERS) if (form.elements[name].value) changed[name] = form.elements[name].value;
    changed.ordering = changed.ordering || "name";
    query = changed;
    cursor = null;
    history.replaceState(null, "", `?${new URLSearchParams(query)}`);
    reloadPage();
  };
  if (event.target.name === "search") searchTimer = setTimeout(apply, SEARCH_DEBOUNCE_MS);
  else apply();
});
form.addEventListener("submit", (event) => event.preventDefault());
document.querySelector("[data-page-next]").addEventListener("click", () => {
  cursor = next;
  reloadPage();
});
document.querySelector("[data-page-first]").addEventListener("click", () => {
  cursor = null;
  reloadPage();
});

async function reloadPage() {
  page.cacheKey = cacheKeyOf();
  try {
    await page.load();
    app.render();
  } catch {
    // Offline: the page stays as it is; the connection's banner says why.
  }
}

// -- the page -----------------------------------------------------------------------------

const page = {
  cacheKey: cacheKeyOf(),
  entities: ["company"],
  prefetchInView: true,

  contexts() {
    return ["companies", ...members.map((id) => `company:${id}`)];
  },

  panelsOf() {
    return ["directory"];
  },

  // Profile changes come on `companies` (the directory's category); the rows' company
  // contexts are followed for their emission totals only.
  keep(context, item) {
    return context === "companies" || item.entity === "emission_record";
  },

  async load() {
    const params = new URLSearchParams({ ...query, page_size: String(PAGE_SIZE), fields: FIELDS });
    if (cursor) params.set("cursor", cursor);
    const list = await getJson(`/api/companies/?${params}`);
    listSeq = list.seq;
    members = list.results.map((company) => String(company.id));
    for (const company of list.results) store.load("company", company.id, company, list.seq);
    next = list.next ? new URL(list.next, location.href).searchParams.get("cursor") : null;
    store.invalidate("company");
    const cursors = {};
    for (const context of this.contexts()) cursors[context] = list.seq;
    app.follow(this.contexts(), cursors);
    return { cursors, epoch: list.epoch };
  },

  apply(changes) {
    let follow = false;
    for (const change of changes) {
      if (change.entity === "company") {
        const company = change.after;
        if (!company) {
          members = members.filter((id) => id !== change.id);
          follow = true;
        } else if (!members.includes(change.id) && !company._partial && matches(company)
          && belongs(company, store.value("rows"))) {
          members.push(change.id);
          follow = true;
          if (change.op === "insert") announce(`New company in the directory: ${company.name}`);
        }
      } else if (change.entity === "emission_record" && change.after) {
        // The row's latest total: the newest year that is not rejected.
        const record = change.after;
        const company = store.get("company", record.company_id);
        if (company && record.total_tonnes !== undefined && record.verification_status !== "rejected"
          && record.year >= (company.latest_year ?? 0)) {
          store.load("company", company.id, { latest_year: record.year, latest_total_tonnes: record.total_tonnes }, change.seq);
        }
      }
    }
    store.invalidate("company");
    const rows = store.value("rows");
    if (rows.length > PAGE_SIZE) {
      // The page is full: the last row moves on to the next page (whose cursor only the
      // server can give when this was the last page).
      members = rows.slice(0, PAGE_SIZE).map((company) => company.id);
      store.invalidate("company");
      follow = true;
      if (!next) app.reload("directory");
    }
    if (follow) {
      const cursors = {};
      for (const id of members) cursors[`company:${id}`] = (store.get("company", id) || {})._seq || listSeq;
      app.follow(this.contexts(), cursors);
    }
  },

  render() {
    const rows = store.value("rows");
    table.render(rows);
    document.querySelector("[data-directory-empty]").hidden = rows.length > 0 || !table.loaded;
    document.querySelector("[data-page-next]").disabled = !next;
    document.querySelector("[data-page-first]").disabled = !cursor;
  },

  view() {
    return { members, next, cursor };
  },

  restore(view) {
    members = view.members || [];
    next = view.next || null;
  },
};

app.run(page);
