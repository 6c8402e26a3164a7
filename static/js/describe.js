// Words for change items: the recent-changes feed, the movers, and the aria-live
// announcements all describe a change the same way.

import { integer, percent, relativeChange } from "./format.js";

const LABELS = {
  verification_status: "verification",
  data_quality_score: "data quality",
  is_public: "listing",
  name: "name",
  country: "country",
  industry: "industry",
};

/** The company a change concerns, or null. */
export function companyIdOf(item) {
  if (item.entity === "company") return String(item.id);
  return item.fields && item.fields.company_id ? String(item.fields.company_id) : null;
}

/** How much an emission total moved, in percent, or null. */
export function totalMove(item) {
  if (item.entity !== "emission_record" || item.op !== "update") return null;
  if (!item.fields || !item.previous || !("total_tonnes" in item.previous)) return null;
  return relativeChange(item.previous.total_tonnes, item.fields.total_tonnes);
}

/** One sentence for a change item; `name(companyId)` and `industryName(slug)` look
 * names up (they may return null while a name is being fetched). */
export function describe(item, { name, industryName }) {
  const companyId = companyIdOf(item);
  const who = (companyId && name(companyId)) || "A company";
  if (item.entity === "company") {
    if (item.op === "insert") {
      const industry = item.fields.industry ? industryName(item.fields.industry) : null;
      return `New company: ${item.fields.name || who}${industry ? ` (${industry})` : ""}`;
    }
    if (item.op === "delete") return `${who} is no longer listed`;
    const parts = (item.changed || []).filter((field) => field in LABELS).map((field) => {
      const before = item.previous[field];
      const after = item.fields[field];
      if (field === "data_quality_score") return `data quality ${integer(before)} → ${integer(after)}`;
      if (field === "industry") return `moved to ${industryName(after) || after}`;
      return `${LABELS[field]} ${before ?? "—"} → ${after ?? "—"}`;
    });
    return `${item.fields.name || who}: ${parts.join(", ") || "profile updated"}`;
  }
  if (item.entity === "emission_record") {
    const year = item.fields.year ? ` ${item.fields.year}` : "";
    if (item.op === "insert") return `${who} reported${year}: ${integer(item.fields.total_tonnes)} t CO₂e`;
    if (item.op === "delete") return `${who}: a yearly record was withdrawn`;
    const move = totalMove(item);
    if (move !== null) {
      return `${who}${year}: total ${percent(move)} to ${integer(item.fields.total_tonnes)} t CO₂e`;
    }
    if ((item.changed || []).includes("verification_status")) {
      return `${who}${year}: verification ${item.previous.verification_status} → ${item.fields.verification_status}`;
    }
    return `${who}${year}: figures updated`;
  }
  if (item.entity === "industry_benchmark") {
    const industry = industryName(item.fields.industry) || item.fields.industry || "An industry";
    return `${industry} ${item.fields.year || ""} benchmark (${item.fields.metric || "total"}): median ${integer(item.fields.median)} t`;
  }
  return "Data updated";
}
