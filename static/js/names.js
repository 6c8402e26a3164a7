// Company names for items that carry only a company id (emission records): from the
// store when known, else fetched once (a few fields of the company snapshot).

import { getJson } from "./http.js";

export class CompanyNames {
  constructor(store, onLearned) {
    this.store = store;
    this.onLearned = onLearned;
    this.asked = new Set();
  }

  name(id) {
    const company = this.store.get("company", id);
    if (company && company.name) return company.name;
    this.learn(id);
    return null;
  }

  remember(companies, seq) {
    for (const [id, fields] of Object.entries(companies || {})) {
      if (!this.store.get("company", id)) this.store.load("company", id, fields, seq);
    }
  }

  async learn(id) {
    if (this.asked.has(id)) return;
    this.asked.add(id);
    try {
      const data = await getJson(`/api/companies/${id}/?fields=id,name,country,industry`);
      this.store.load("company", id, { name: data.name, country: data.country, industry: data.industry }, data.seq);
      this.onLearned(id);
    } catch {
      // Hidden or gone: the sentence keeps saying "A company".
    }
  }
}
