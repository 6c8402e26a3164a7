// Keyed tables: rows are matched to records by key, so an update patches only the cells
// whose value changed (with a short up/down highlight), new rows fade in, gone rows fade
// out, and moved rows slide to their new place (FLIP). Rows are moved, never rebuilt,
// so focus and the scroll position stay where they were.

import { integer } from "./format.js";
import { flash, reducedMotion } from "./motion.js";

const LEAVE_MS = 400;

/** A column of whole numbers (tonnes, counts): right-aligned, grouped by thousands. */
export function integerColumn(field) {
  return { field, numeric: true, format: integer };
}

export class KeyedTable {
  /**
   * columns: [{ field, format(value, row) -> string, value(row)?, href(row)?, numeric?,
   *             className? }]
   * key(row) -> string; rowAttributes(row) -> {name: value} (data-* for tests, links).
   */
  constructor(table, { key, columns, rowAttributes = () => ({}) }) {
    this.table = table;
    this.tbody = table.tBodies[0];
    this.key = key;
    this.columns = columns;
    this.rowAttributes = rowAttributes;
    this.rows = new Map(); // key -> tr
    this.loaded = false;
  }

  render(records) {
    const motion = !reducedMotion();
    if (!this.loaded) {
      // The skeleton rows had the rows' height; the real ones take their place.
      for (const row of [...this.tbody.querySelectorAll("tr.skeleton")]) row.remove();
      this.loaded = true;
    }
    const focused = this.tbody.contains(document.activeElement) ? document.activeElement : null;
    const before = new Map();
    if (motion) for (const [key, tr] of this.rows) before.set(key, tr.getBoundingClientRect().top);

    const wanted = [];
    const keys = new Set();
    for (const record of records) {
      const key = String(this.key(record));
      if (keys.has(key)) continue;
      keys.add(key);
      let tr = this.rows.get(key);
      if (!tr) {
        tr = this.create(record, key);
        if (this.rows.size && motion) tr.classList.add("row-enter");
        this.rows.set(key, tr);
      } else {
        this.patch(tr, record, true);
      }
      wanted.push(tr);
    }
    for (const [key, tr] of this.rows) {
      if (!keys.has(key)) {
        this.rows.delete(key);
        this.leave(tr, motion);
      }
    }
    // Put rows in order from the end, moving only those not already in place.
    for (let i = wanted.length - 1; i >= 0; i -= 1) {
      const next = wanted[i + 1] || null;
      if (wanted[i].nextElementSibling !== next || wanted[i].parentNode !== this.tbody) {
        this.tbody.insertBefore(wanted[i], next);
      }
    }
    if (motion) this.slide(before);
    if (focused && document.activeElement !== focused && focused.isConnected) {
      focused.focus({ preventScroll: true });
    }
    if (this.onRender) this.onRender(records);
  }

  create(record, key) {
    const tr = document.createElement("tr");
    tr.dataset.key = key;
    for (const column of this.columns) {
      const td = document.createElement("td");
      td.dataset.field = column.field;
      if (column.numeric) td.classList.add("num");
      if (column.className) td.classList.add(column.className);
      tr.append(td);
    }
    this.patch(tr, record, false);
    return tr;
  }

  patch(tr, record, highlight) {
    for (const [name, value] of Object.entries(this.rowAttributes(record))) {
      if (tr.getAttribute(name) !== String(value)) tr.setAttribute(name, value);
    }
    this.columns.forEach((column, index) => {
      const td = tr.cells[index];
      const value = column.value ? column.value(record) : record[column.field];
      const raw = value === null || value === undefined ? "" : String(value);
      if (td.dataset.value === raw && td.hasAttribute("data-value")) return;
      const old = td.dataset.value;
      td.dataset.value = raw;
      const text = column.format ? column.format(value, record) : raw;
      const href = column.href ? column.href(record) : null;
      if (href) {
        let link = td.querySelector("a");
        if (!link) {
          link = document.createElement("a");
          td.replaceChildren(link);
        }
        link.href = href;
        link.textContent = text;
      } else {
        td.textContent = text;
      }
      if (highlight && old !== undefined) {
        const a = Number(old);
        const b = Number(raw);
        const numeric = column.numeric && old !== "" && raw !== "" && Number.isFinite(a) && Number.isFinite(b);
        flash(td, numeric ? (b > a ? "up" : b < a ? "down" : null) : null);
      }
    });
  }

  leave(tr, motion) {
    if (!motion) {
      tr.remove();
      return;
    }
    tr.classList.add("row-leave");
    tr.removeAttribute("data-key");
    setTimeout(() => tr.remove(), LEAVE_MS);
  }

  slide(before) {
    for (const [key, top] of before) {
      const tr = this.rows.get(key);
      if (!tr) continue;
      const delta = top - tr.getBoundingClientRect().top;
      if (Math.abs(delta) < 1) continue;
      tr.classList.remove("row-move");
      tr.style.transform = `translateY(${delta}px)`;
      // Next frame: transition from the old place to the new one.
      requestAnimationFrame(() => {
        tr.classList.add("row-move");
        tr.style.transform = "";
        setTimeout(() => tr.classList.remove("row-move"), 450);
      });
    }
  }
}
