// Highlights and the polite announcer, honouring prefers-reduced-motion.

const FLASH_MS = 2400;
const reduced = matchMedia("(prefers-reduced-motion: reduce)");

export function reducedMotion() {
  return reduced.matches;
}

/** Mark an element as just changed: up, down, or simply changed (null). The CSS
 * animates it, or under reduced motion tints it briefly without movement. */
export function flash(element, direction) {
  const name = direction === "up" ? "flash-up" : direction === "down" ? "flash-down" : "flash";
  element.classList.remove("flash", "flash-up", "flash-down");
  void element.offsetWidth; // restart the animation if it was running
  element.classList.add(name);
  clearTimeout(element.flashTimer);
  element.flashTimer = setTimeout(() => element.classList.remove(name), FLASH_MS);
}

// The aria-live region: at most one message per interval, so a burst of changes is one
// sentence ("3 values updated: ...") instead of a screen reader reading for a minute.
const ANNOUNCE_EVERY_MS = 3000;
let queue = [];
let timer = null;

export function announce(text) {
  const region = document.querySelector("[data-announcer]");
  if (!region || !text) return;
  queue.push(text);
  if (timer) return;
  const speak = () => {
    if (!queue.length) {
      timer = null;
      return;
    }
    region.textContent = queue.length === 1
      ? queue[0] : `${queue.length} updates: ${queue.slice(-3).join("; ")}`;
    queue = [];
    timer = setTimeout(speak, ANNOUNCE_EVERY_MS);
  };
  speak();
}
