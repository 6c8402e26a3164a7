// A company snapshot (GET /api/companies/<uuid>/) as store records, shared by the company
// page and by prefetching (which caches exactly what the page would).

import { Store } from "./store.js";

export const COMPANY_ENTITIES = ["company", "emission_record"];

export function companyContext(id) {
  return `company:${id}`;
}

/** Load the snapshot into the store: the company, its records, and the records it no
 * longer has (deleted, or now hidden) dropped. */
export function companyLoad(store, data) {
  const { emissions = [], seq, epoch: _epoch, ...company } = data;
  store.load("company", company.id, company, seq);
  const ids = new Set(emissions.map((record) => String(record.id)));
  for (const record of store.all("emission_record")) {
    if (record.company_id === company.id && !ids.has(record.id)) store.drop("emission_record", record.id, seq);
  }
  for (const record of emissions) {
    store.load("emission_record", record.id, { ...record, company_id: company.id }, seq);
  }
}

/** The cache entry the company page keeps for this snapshot. */
export function companyCacheEntry(data) {
  const store = new Store();
  companyLoad(store, data);
  return {
    key: companyContext(data.id),
    epoch: data.epoch,
    cursors: { [companyContext(data.id)]: data.seq },
    records: store.export(COMPANY_ENTITIES),
    view: {},
  };
}
