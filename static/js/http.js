// fetch() with the page's conventions: JSON, the session cookie, the CSRF token on writes,
// no HTTP cache (snapshots must be current; ETags are for API clients that keep them).

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

export class HttpError extends Error {
  constructor(response, body) {
    super(`${response.status} ${response.statusText}`);
    this.status = response.status;
    this.body = body;
    this.retryAfterMs = Number(response.headers.get("Retry-After")) * 1000 || 0;
  }
}

export async function getJson(url, { signal } = {}) {
  const response = await fetch(url, {
    headers: { Accept: "application/json" },
    credentials: "same-origin",
    cache: "no-store",
    signal,
  });
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new HttpError(response, body);
  return body;
}

export async function sendJson(url, method, data) {
  const response = await fetch(url, {
    method,
    headers: {
      Accept: "application/json",
      "Content-Type": "application/json",
      "X-CSRFToken": csrfToken(),
    },
    credentials: "same-origin",
    body: JSON.stringify(data),
  });
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new HttpError(response, body);
  return body;
}
