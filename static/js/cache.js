// The last data of each view, kept in IndexedDB so a reload, a prefetched navigation or
// an offline start shows it at once (then the live snapshot replaces it). Entries are
// `{key, epoch, cursors, records, view, savedAt}`; a different epoch makes them useless
// and they are dropped.

const DB_NAME = "carbon-dashboards";
const DB_VERSION = 1;
const VIEWS = "views";
// Entries older than a day are not worth showing even offline.
const MAX_AGE_MS = 24 * 3600 * 1000;

let opening = null;

function database() {
  if (!opening) {
    opening = new Promise((resolve, reject) => {
      if (!("indexedDB" in globalThis)) {
        reject(new Error("no IndexedDB"));
        return;
      }
      const request = indexedDB.open(DB_NAME, DB_VERSION);
      request.onupgradeneeded = () => request.result.createObjectStore(VIEWS, { keyPath: "key" });
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  }
  return opening;
}

function run(mode, action) {
  return database().then((db) => new Promise((resolve, reject) => {
    const tx = db.transaction(VIEWS, mode);
    const request = action(tx.objectStore(VIEWS));
    tx.oncomplete = () => resolve(request ? request.result : undefined);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  }));
}

/** The cached entry for `key`, or null (missing, too old, or no IndexedDB). */
export async function cacheGet(key) {
  try {
    const entry = await run("readonly", (views) => views.get(key));
    if (!entry || Date.now() - entry.savedAt > MAX_AGE_MS) return null;
    return entry;
  } catch {
    return null;
  }
}

export async function cachePut(entry) {
  try {
    await run("readwrite", (views) => views.put({ ...entry, savedAt: Date.now() }));
  } catch {
    // Private windows and full disks refuse; the page works without the cache.
  }
}

/** Forget everything (the change log's epoch changed: cursors and data are void). */
export async function cacheClear() {
  try {
    await run("readwrite", (views) => views.clear());
  } catch {
    // as above
  }
}
