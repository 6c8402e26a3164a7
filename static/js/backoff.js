// Reconnection delays: exponential backoff with "full jitter" (a uniform draw between 0
// and the exponential ceiling). After a server restart thousands of clients reconnect;
// full jitter spreads them over the whole window instead of in synchronized waves.

// First ceiling 0.5 s: a dropped connection on a healthy network comes back at once.
const BASE_MS = 500;
// Never wait more than 30 s: a person notices a dashboard that is dead for longer.
const CAP_MS = 30000;

export class Backoff {
  constructor({ base = BASE_MS, cap = CAP_MS, random = Math.random } = {}) {
    this.base = base;
    this.cap = cap;
    this.random = random;
    this.attempt = 0;
  }

  /** The next delay in ms (and count the attempt). */
  next() {
    const ceiling = Math.min(this.cap, this.base * 2 ** this.attempt);
    this.attempt += 1;
    return Math.floor(this.random() * ceiling);
  }

  reset() {
    this.attempt = 0;
  }
}
