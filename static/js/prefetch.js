// Prefetch: company links the person hovers, or (on the directory) that scroll into view,
// have their snapshot fetched into the cache (cache.js), so opening the company shows
// its data at once while the page loads the live snapshot.

import { cacheGet, cachePut } from "./cache.js";
import { companyCacheEntry } from "./company-data.js";
import { getJson } from "./http.js";

// A hover shorter than this is the pointer passing by, not an intention.
const HOVER_DELAY_MS = 80;
// A cached snapshot younger than this is fresh enough for a first paint.
const FRESH_MS = 60000;
// At most this many prefetches per page, two at a time: a directory page has 25 links,
// and prefetching must never compete with the page's own requests.
const BUDGET = 60;
const CONCURRENCY = 2;
const COMPANY_LINK = /^\/companies\/([0-9a-f-]{36})\/$/;

const done = new Set();
const queue = [];
let running = 0;

function companyIdOf(link) {
  const match = link && link.pathname ? COMPANY_LINK.exec(link.pathname) : null;
  return match ? match[1] : null;
}

async function prefetch(id) {
  running += 1;
  try {
    const cached = await cacheGet(`company:${id}`);
    if (!cached || Date.now() - cached.savedAt > FRESH_MS) {
      const data = await getJson(`/api/companies/${id}/`);
      await cachePut(companyCacheEntry(data));
    }
    document.dispatchEvent(new CustomEvent("prefetched", { detail: { id } }));
  } catch {
    done.delete(id); // try again on the next hover
  } finally {
    running -= 1;
    pump();
  }
}

function pump() {
  while (running < CONCURRENCY && queue.length) prefetch(queue.shift());
}

export function prefetchCompany(id) {
  if (!id || done.has(id) || done.size >= BUDGET || !navigator.onLine) return;
  done.add(id);
  queue.push(id);
  pump();
}

/** Prefetch company links inside `root` on hover, and (`inView`) when they appear. */
export function prefetchLinks(root, { inView = false } = {}) {
  let timer = null;
  root.addEventListener("pointerover", (event) => {
    const link = event.target.closest && event.target.closest("a");
    const id = companyIdOf(link);
    if (!id) return;
    clearTimeout(timer);
    timer = setTimeout(() => prefetchCompany(id), HOVER_DELAY_MS);
  });
  root.addEventListener("pointerout", () => clearTimeout(timer));
  root.addEventListener("focusin", (event) => prefetchCompany(companyIdOf(event.target.closest("a"))));
  if (!inView || !("IntersectionObserver" in globalThis)) return;
  const observer = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      if (entry.isIntersecting) {
        prefetchCompany(companyIdOf(entry.target));
        observer.unobserve(entry.target);
      }
    }
  }, { rootMargin: "100px" });
  const watch = () => {
    for (const link of root.querySelectorAll("a")) if (companyIdOf(link)) observer.observe(link);
  };
  new MutationObserver(watch).observe(root, { childList: true, subtree: true });
  watch();
}
