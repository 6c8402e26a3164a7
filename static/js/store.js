// The client-side store: one per page, records keyed by entity and id.
//
// Every record remembers the seq it reflects (`_seq`): a snapshot loaded at seq S gives
// its records S; a change item is applied only if its seq is above the record's, so
// duplicates, replays and an older snapshot arriving late are all harmless (the newer
// seq wins). A deleted record leaves a tombstone with its seq, so a late snapshot cannot
// bring it back.
//
// Derived views (totals, rankings) are computed from records on demand and cached until
// one of their input entities changes.

export class Store {
  constructor() {
    this.tables = new Map();
    this.tombstones = new Map();
    this.derivations = new Map();
  }

  table(entity) {
    let table = this.tables.get(entity);
    if (!table) {
      table = new Map();
      this.tables.set(entity, table);
    }
    return table;
  }

  get(entity, id) {
    return this.table(entity).get(String(id));
  }

  all(entity) {
    return [...this.table(entity).values()];
  }

  seqOf(entity, id) {
    const record = this.get(entity, id);
    if (record) return record._seq;
    return this.tombstones.get(`${entity}:${id}`) ?? -1;
  }

  /** A record as a snapshot at `seq` shows it; kept only if no newer seq is known. */
  load(entity, id, fields, seq) {
    const key = String(id);
    if (seq < this.seqOf(entity, key)) return false;
    const current = this.get(entity, key);
    this.table(entity).set(key, { ...(current || {}), ...fields, id: key, _seq: seq, _partial: false });
    this.tombstones.delete(`${entity}:${key}`);
    this.invalidate(entity);
    return true;
  }

  /** A record a snapshot at `seq` says does not exist (any more). */
  drop(entity, id, seq) {
    const key = String(id);
    if (seq < this.seqOf(entity, key)) return false;
    this.table(entity).delete(key);
    this.tombstones.set(`${entity}:${key}`, seq);
    this.invalidate(entity);
    return true;
  }

  /** Apply one change item (PROTOCOL.md); returns what changed, or null if skipped. */
  apply(item) {
    const { entity, op, seq } = item;
    const id = String(item.id);
    if (seq <= this.seqOf(entity, id)) return null;
    const before = this.get(entity, id) || null;
    let after = null;
    if (op === "delete") {
      this.table(entity).delete(id);
      this.tombstones.set(`${entity}:${id}`, seq);
    } else {
      // An update of a record we never loaded holds only the changed fields (and the
      // keys that place it): `_partial` says so to views that need whole records.
      const base = op === "insert" ? { _partial: false } : before || { _partial: true };
      after = { ...base, ...item.fields, id, _seq: seq };
      this.table(entity).set(id, after);
      this.tombstones.delete(`${entity}:${id}`);
    }
    this.invalidate(entity);
    return {
      entity, id, op, seq, before, after,
      changed: item.changed || [],
      previous: item.previous || {},
      significance: item.significance || "minor",
      context: item.context,
      at: item.at,
    };
  }

  // -- derived views -----------------------------------------------------------------------

  /** Register a derived view of `inputs` (entity names). */
  derive(name, inputs, compute) {
    this.derivations.set(name, { inputs, compute, dirty: true, value: undefined });
  }

  value(name) {
    const derivation = this.derivations.get(name);
    if (derivation.dirty) {
      derivation.value = derivation.compute(this);
      derivation.dirty = false;
    }
    return derivation.value;
  }

  invalidate(entity) {
    for (const derivation of this.derivations.values()) {
      if (derivation.inputs.includes(entity)) derivation.dirty = true;
    }
  }

  // -- persistence (cache.js keeps what this exports) ---------------------------------------

  export(entities) {
    const out = {};
    for (const entity of entities) out[entity] = [...this.table(entity).entries()];
    return out;
  }

  import(data) {
    for (const [entity, rows] of Object.entries(data || {})) {
      for (const [id, record] of rows) {
        if ((record._seq ?? 0) >= this.seqOf(entity, id)) this.table(entity).set(id, record);
      }
      this.invalidate(entity);
    }
  }

  clear() {
    this.tables.clear();
    this.tombstones.clear();
    for (const derivation of this.derivations.values()) derivation.dirty = true;
  }
}
