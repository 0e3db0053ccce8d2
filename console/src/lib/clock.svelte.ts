// One clock for every "3 min ago" on the page. Reading `now` gives the real current time and
// subscribes the reader to a tick every few seconds, so relative times stay true while a page is
// open, and a time just reported never reads as being in the future.
class Clock {
  #tick = $state(0);
  constructor() {
    if (typeof window !== "undefined") setInterval(() => this.#tick++, 5000);
  }
  get now(): number {
    void this.#tick;
    return Date.now();
  }
}

export const clock = new Clock();
