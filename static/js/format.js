// How values read on the page: one place, so every panel and the tests agree.

const whole = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const oneDecimal = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });

export const EMPTY = "—";

/** Tonnes and counts: grouped integers ("1,234,567"). */
export function integer(value) {
  if (value === null || value === undefined || value === "") return EMPTY;
  const number = Number(value);
  return Number.isFinite(number) ? whole.format(number) : EMPTY;
}

export function decimal(value) {
  if (value === null || value === undefined || value === "") return EMPTY;
  const number = Number(value);
  return Number.isFinite(number) ? oneDecimal.format(number) : EMPTY;
}

/** A signed percentage ("+12.5 %"). */
export function percent(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return EMPTY;
  return `${value > 0 ? "+" : ""}${oneDecimal.format(value)} %`;
}

/** Relative change from `before` to `after` in percent, or null when undefined. */
export function relativeChange(before, after) {
  const a = Number(before);
  const b = Number(after);
  if (!Number.isFinite(a) || !Number.isFinite(b) || a === 0) return null;
  return ((b - a) / Math.abs(a)) * 100;
}

/** Local wall-clock time, "HH:MM" (24 h). */
export function clock(date) {
  const d = date instanceof Date ? date : new Date(date);
  if (Number.isNaN(d.getTime())) return EMPTY;
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

/** "just now", "4 s ago", "3 min ago", "2 h ago". */
export function ago(ms) {
  const seconds = Math.max(0, Math.round(ms / 1000));
  if (seconds < 2) return "just now";
  if (seconds < 60) return `${seconds} s ago`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  return `${Math.floor(minutes / 60)} h ago`;
}

export function status(value) {
  return value ? String(value) : EMPTY;
}
