import { Code, ConnectError } from "@connectrpc/connect";

// Load shedding for calls a whole fleet makes at once after an outage (Register, Renew): at most
// `concurrency` run, at most `queue` wait for a turn, none waits longer than `maxWaitMs`. The rest
// are answered at once with Unavailable and a `retry-after` hint (seconds), so a herd of tens of
// thousands degrades to quick refusals the agents come back from, spread out, instead of calls
// piling up on the database pool until the clients' deadlines pass.
//
// The hint spreads the herd over the time the server needs for it: the calls refused in the last
// 10 s (the demand still out there) divided by the calls completed in the last 10 s (what the
// server manages, at least `concurrency` calls of 40 ms a second), between 1 s and 60 s.
// Agents wait between the hint and twice it (agent/src/errors.ts retryAfterMs), so the herd
// returns at about the rate it can be served.
export interface Admission {
  run<T>(fn: () => Promise<T>): Promise<T>;
  readonly inFlight: number;
  readonly waiting: number;
}

export interface AdmissionOptions {
  concurrency: number;
  queue: number;
  maxWaitMs: number;
  // For the refusal's message: "the control plane is busy with <what>".
  what: string;
  now?: () => number;
}

const WINDOW_MS = 10_000;
const MAX_HINT_SECONDS = 60;

export function createAdmission(opts: AdmissionOptions): Admission {
  const now = opts.now ?? Date.now;
  let inFlight = 0;
  const waiters: { admit: () => void; timer: NodeJS.Timeout }[] = [];
  // Two counters per 10 s window, the current one and the last: enough for a rate, no per-call state.
  const refused = new WindowCounter(now);
  const completed = new WindowCounter(now);

  const refusal = () => {
    refused.add();
    // What the server completed lately, but never less than `concurrency` calls of 40 ms each a
    // second (a Register takes a few): a herd arriving at a server that has been idle (nothing
    // completed yet) must not be told to stay away while the server waits for it. Too short a
    // hint costs little: a refusal is cheap, and the agent comes back after another one.
    const rate = Math.max(opts.concurrency * 25, completed.perWindow() / (WINDOW_MS / 1000));
    const seconds = Math.min(MAX_HINT_SECONDS, Math.max(1, Math.ceil(refused.perWindow() / rate)));
    return new ConnectError(`the control plane is busy with ${opts.what}; retry after ${seconds}s`, Code.Unavailable, { "retry-after": String(seconds) });
  };
  const release = () => {
    completed.add();
    const next = waiters.shift();
    if (next) {
      clearTimeout(next.timer);
      next.admit();
    } else {
      inFlight--;
    }
  };
  // Resolves when the call may run (its slot taken), rejects with the refusal when it may not.
  const turn = () =>
    new Promise<void>((resolve, reject) => {
      if (inFlight < opts.concurrency) {
        inFlight++;
        resolve();
        return;
      }
      if (waiters.length >= opts.queue) {
        reject(refusal());
        return;
      }
      const waiter = {
        admit: resolve,
        timer: setTimeout(() => {
          waiters.splice(waiters.indexOf(waiter), 1);
          reject(refusal());
        }, opts.maxWaitMs),
      };
      waiters.push(waiter);
    });

  return {
    async run(fn) {
      await turn();
      try {
        return await fn();
      } finally {
        release();
      }
    },
    get inFlight() {
      return inFlight;
    },
    get waiting() {
      return waiters.length;
    },
  };
}

// Events in the current 10 s window plus the previous one, weighted by how much of the previous
// one the last 10 s still cover: a sliding count without a timestamp per event.
class WindowCounter {
  #now: () => number;
  #start: number;
  #current = 0;
  #previous = 0;

  constructor(now: () => number) {
    this.#now = now;
    this.#start = now();
  }

  add() {
    this.#roll();
    this.#current++;
  }

  perWindow(): number {
    this.#roll();
    const into = (this.#now() - this.#start) / WINDOW_MS;
    return this.#current + this.#previous * (1 - into);
  }

  #roll() {
    const elapsed = this.#now() - this.#start;
    if (elapsed < WINDOW_MS) return;
    this.#previous = elapsed < 2 * WINDOW_MS ? this.#current : 0;
    this.#current = 0;
    this.#start += Math.floor(elapsed / WINDOW_MS) * WINDOW_MS;
  }
}
