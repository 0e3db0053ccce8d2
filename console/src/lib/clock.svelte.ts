// One clock for every "3 min ago" on the page, ticking every few seconds, so relative times stay
// true while a page is open and a time just reported never reads as "in 8 s".
class Clock {
  now = $state(Date.now());
  constructor() {
    if (typeof window !== "undefined") setInterval(() => (this.now = Date.now()), 5000);
  }
}

export const clock = new Clock();
