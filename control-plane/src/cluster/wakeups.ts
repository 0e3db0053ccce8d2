// Wakes long-polling PollCommands calls when a command is queued for their agent.
export interface Wakeups {
  // A mark to take before looking for commands; `wait` with it returns at once when the agent
  // was notified after the mark, so a command queued while the poll was claiming is not missed.
  mark(): number;
  // Resolves true when woken (or notified since `since`), false on timeout, abort or close.
  wait(agentId: string, ms: number, signal: AbortSignal, since?: number): Promise<boolean>;
  notify(agentId: string): void;
  // Wakes every waiting poll (and any about to wait with an earlier mark), so each looks at the
  // queue again: after the replica link was down, when notifications may have been missed.
  notifyAll(): void;
  close(): void;
  waiting(): number;
}

// Recent notifications remembered for `since`; far more than can happen during one claim.
const RECENT_NOTIFICATIONS = 50_000;

// One waiting poll, and the only object a wait adds besides its promise: thousands are held at
// once for up to a minute each, long enough to outlive V8's young generation, so everything a
// wait keeps is paid for in the old generation (and its headroom). It is its own abort listener
// (`handleEvent`), its timeout is a slot in one deadline heap served by a single timer, and the
// waits of one agent are chained through it: no closures, no timer and no Set per wait.
class Waiter {
  // Position in the deadline heap; -1 once settled.
  index = -1;
  // The agent's other waiters (usually none).
  prev: Waiter | undefined;
  next: Waiter | undefined;
  readonly agentId: string;
  readonly deadline: number;
  readonly signal: AbortSignal;
  readonly resolve: (woken: boolean) => void;
  readonly owner: { settle(w: Waiter, woken: boolean, rearm?: boolean): void };
  constructor(agentId: string, deadline: number, signal: AbortSignal, resolve: (woken: boolean) => void, owner: Waiter["owner"]) {
    this.agentId = agentId;
    this.deadline = deadline;
    this.signal = signal;
    this.resolve = resolve;
    this.owner = owner;
  }
  // The call's signal aborted: the client went away or the server is draining.
  handleEvent() {
    this.owner.settle(this, false);
  }
}

// `onNotify` hears every notification (this replica's and, through the cluster, the others').
export function createWakeups(onNotify?: (agentId: string) => void): Wakeups {
  // agent ID → its first waiter (the others chained behind it).
  const waiters = new Map<string, Waiter>();
  const deadlines = createDeadlineHeap();
  // agent ID → the counter at its latest notification, oldest first.
  const notified = new Map<string, number>();
  let counter = 0;
  // The counter at the latest notifyAll.
  let everyoneAt = -1;
  let closed = false;
  // One timer for every wait: armed for the earliest deadline. Deadlines are on the monotonic
  // clock, as a timer of their own would be: a wall clock set back must not stretch a wait.
  let timer: NodeJS.Timeout | undefined;
  let timerAt = Infinity;

  const owner = {
    // `rearm` false: the caller settles several and sets the timer once after.
    settle(w: Waiter, woken: boolean, rearm = true) {
      if (w.index < 0) return;
      deadlines.remove(w);
      w.signal.removeEventListener("abort", w);
      if (w.prev) w.prev.next = w.next;
      else if (w.next) waiters.set(w.agentId, w.next);
      else waiters.delete(w.agentId);
      if (w.next) w.next.prev = w.prev;
      w.prev = w.next = undefined;
      w.resolve(woken);
      if (rearm) arm();
    },
  };

  // Keeps the one timer set for the earliest deadline, and none when nothing waits.
  function arm() {
    const first = deadlines.peek();
    const at = first?.deadline ?? Infinity;
    if (at === timerAt) return;
    if (timer) clearTimeout(timer);
    timer = undefined;
    timerAt = at;
    if (first) timer = setTimeout(expire, Math.max(0, at - performance.now()));
  }

  function expire() {
    timer = undefined;
    timerAt = Infinity;
    const now = performance.now();
    for (let w = deadlines.peek(); w && w.deadline <= now; w = deadlines.peek()) owner.settle(w, false, false);
    arm();
  }

  // Settles every waiter of the agent (each settle unlinks the head, so take it again each time).
  function settleAgent(agentId: string, woken: boolean) {
    for (let w = waiters.get(agentId); w; w = waiters.get(agentId)) owner.settle(w, woken, false);
  }

  return {
    mark: () => counter,
    wait(agentId, ms, signal, since) {
      if (closed || signal.aborted) return Promise.resolve(false);
      if (since !== undefined && ((notified.get(agentId) ?? -1) > since || everyoneAt > since)) return Promise.resolve(true);
      return new Promise<boolean>((resolve) => {
        const w = new Waiter(agentId, performance.now() + Math.max(0, ms), signal, resolve, owner);
        const first = waiters.get(agentId);
        if (first) {
          w.next = first.next;
          if (first.next) first.next.prev = w;
          first.next = w;
          w.prev = first;
        } else {
          waiters.set(agentId, w);
        }
        deadlines.push(w);
        signal.addEventListener("abort", w, { once: true });
        arm();
      });
    },
    notify(agentId) {
      onNotify?.(agentId);
      notified.delete(agentId);
      notified.set(agentId, ++counter);
      if (notified.size > RECENT_NOTIFICATIONS) notified.delete(notified.keys().next().value!);
      settleAgent(agentId, true);
      arm();
    },
    notifyAll() {
      everyoneAt = ++counter;
      for (const agentId of [...waiters.keys()]) settleAgent(agentId, true);
      arm();
    },
    close() {
      closed = true;
      for (const agentId of [...waiters.keys()]) settleAgent(agentId, false);
      arm();
    },
    waiting: () => deadlines.size(),
  };
}

// A binary min-heap of waiters by deadline; each waiter knows its index, so one that is woken or
// aborted leaves at once (log n) instead of staying referenced until its deadline.
function createDeadlineHeap() {
  const heap: Waiter[] = [];
  const place = (w: Waiter, i: number) => {
    heap[i] = w;
    w.index = i;
  };
  const up = (i: number) => {
    const w = heap[i]!;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent]!.deadline <= w.deadline) break;
      place(heap[parent]!, i);
      i = parent;
    }
    place(w, i);
  };
  const down = (i: number) => {
    const w = heap[i]!;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child = right < heap.length && heap[right]!.deadline < heap[left]!.deadline ? right : left;
      if (heap[child]!.deadline >= w.deadline) break;
      place(heap[child]!, i);
      i = child;
    }
    place(w, i);
  };
  return {
    size: () => heap.length,
    peek: (): Waiter | undefined => heap[0],
    push(w: Waiter) {
      heap.push(w);
      up(heap.length - 1);
    },
    remove(w: Waiter) {
      const i = w.index;
      w.index = -1;
      const last = heap.pop()!;
      if (last === w) return;
      place(last, i);
      up(i);
      down(last.index);
    },
  };
}
