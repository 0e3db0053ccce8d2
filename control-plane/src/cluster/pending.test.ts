import { afterEach, describe, expect, it, vi } from "vitest";
import { createPendingIndex, type PendingIndex } from "./pending.ts";

// A controllable load: each call waits until the test answers it.
function deferredLoad() {
  const calls: { resolve: (ids: string[]) => void; reject: (err: unknown) => void }[] = [];
  return {
    calls,
    load: () => new Promise<string[]>((resolve, reject) => calls.push({ resolve, reject })),
  };
}

function deferred<T>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

let index: PendingIndex | undefined;
afterEach(() => index?.stop());

describe("pending index", () => {
  it("claims for every agent until its first resync, then only for agents with queued commands", async () => {
    index = createPendingIndex({ load: async () => ["a"] });
    expect(index.mayHave("a")).toBe(true);
    expect(index.mayHave("b")).toBe(true);
    await index.resync();
    expect(index.synced).toBe(true);
    expect(index.mayHave("a")).toBe(true);
    expect(index.mayHave("b")).toBe(false);
    index.note("b");
    expect(index.mayHave("b")).toBe(true);
  });

  it("forgets an agent when a claim returns fewer commands than asked for, and keeps it when the claim was full", async () => {
    index = createPendingIndex({ load: async () => ["a", "b"] });
    await index.resync();
    expect(await index.claim("a", 10, async () => [1, 2])).toEqual([1, 2]);
    expect(index.mayHave("a")).toBe(false);
    await index.claim("b", 2, async () => [1, 2]);
    expect(index.mayHave("b")).toBe(true);
  });

  it("keeps an agent noted while its claim ran: that command may have come after the claim's snapshot", async () => {
    index = createPendingIndex({ load: async () => ["a"] });
    await index.resync();
    const gate = deferred<number[]>();
    const claim = index.claim("a", 10, () => gate.promise);
    index.note("a");
    gate.resolve([]);
    await claim;
    expect(index.mayHave("a")).toBe(true);
  });

  it("does not conclude the queue is empty from a claim that overlapped another for the same agent", async () => {
    index = createPendingIndex({ load: async () => ["a"] });
    await index.resync();
    const first = deferred<number[]>();
    const second = deferred<number[]>();
    // The first holds (locks) a full batch; the second, skipping locked rows, finds nothing.
    const a = index.claim("a", 2, () => first.promise);
    const b = index.claim("a", 2, () => second.promise);
    second.resolve([]);
    await b;
    first.resolve([1, 2]);
    await a;
    expect(index.mayHave("a")).toBe(true);
    // Once alone, a claim that finds less than a batch clears it.
    await index.claim("a", 2, async () => [3]);
    expect(index.mayHave("a")).toBe(false);
  });

  it("keeps the mark when a claim fails", async () => {
    index = createPendingIndex({ load: async () => ["a"] });
    await index.resync();
    await expect(index.claim("a", 10, async () => Promise.reject(new Error("db down")))).rejects.toThrow("db down");
    expect(index.mayHave("a")).toBe(true);
  });

  it("claims for everyone while the feed is down, and trusts itself again only after a resync with the feed back", async () => {
    const d = deferredLoad();
    index = createPendingIndex({ load: d.load });
    const first = index.resync();
    d.calls[0]!.resolve([]);
    await first;
    expect(index.mayHave("x")).toBe(false);

    index.feedLost();
    expect(index.synced).toBe(false);
    expect(index.mayHave("x")).toBe(true);
    // A resync while the feed is down reads the table but cannot be trusted: notes are being missed.
    const during = index.resync();
    d.calls[1]!.resolve([]);
    await during;
    expect(index.synced).toBe(false);

    index.feedRestored();
    expect(d.calls).toHaveLength(3);
    d.calls[2]!.resolve(["x"]);
    await index.resync();
    expect(index.synced).toBe(true);
    expect(index.mayHave("x")).toBe(true);
    expect(index.mayHave("y")).toBe(false);
  });

  it("does not trust a resync that spanned a break in the feed", async () => {
    const d = deferredLoad();
    index = createPendingIndex({ load: d.load });
    const r = index.resync();
    index.feedLost();
    index.feedRestored(); // joins the resync already running
    d.calls[0]!.resolve([]);
    await r;
    expect(index.synced).toBe(false);
    expect(index.mayHave("anyone")).toBe(true);
  });

  it("keeps notes that arrive while a resync reads, even for agents the read did not see", async () => {
    const d = deferredLoad();
    index = createPendingIndex({ load: d.load });
    const r = index.resync();
    index.note("late");
    d.calls[0]!.resolve(["early"]);
    await r;
    expect(index.mayHave("late")).toBe(true);
    expect(index.mayHave("early")).toBe(true);
    expect(index.mayHave("other")).toBe(false);
    expect(index.size).toBe(2);
  });

  it("drops agents a resync no longer finds pending (cancelled or claimed elsewhere)", async () => {
    let pending = ["a", "b"];
    index = createPendingIndex({ load: async () => pending });
    await index.resync();
    pending = ["b"];
    await index.resync();
    expect(index.mayHave("a")).toBe(false);
    expect(index.mayHave("b")).toBe(true);
  });

  it("a resync's entries outlive a claim that began before the read", async () => {
    const d = deferredLoad();
    index = createPendingIndex({ load: d.load });
    const r0 = index.resync();
    d.calls[0]!.resolve(["a"]);
    await r0;
    const gate = deferred<number[]>();
    const claim = index.claim("a", 10, () => gate.promise);
    const r1 = index.resync();
    d.calls[1]!.resolve(["a"]);
    await r1;
    gate.resolve([]);
    await claim;
    expect(index.mayHave("a")).toBe(true);
  });

  it("reports a failed resync and stays as it was", async () => {
    const errors: unknown[] = [];
    index = createPendingIndex({
      load: async () => {
        throw new Error("connection refused");
      },
      onError: (err) => errors.push(err),
    });
    await index.resync();
    expect(errors).toHaveLength(1);
    expect(index.synced).toBe(false);
    expect(index.mayHave("a")).toBe(true);
  });

  it("resyncs on its own every resyncMs", async () => {
    vi.useFakeTimers();
    try {
      let reads = 0;
      index = createPendingIndex({ load: async () => (reads++, []), resyncMs: 1000 });
      await vi.advanceTimersByTimeAsync(3500);
      expect(reads).toBe(3);
      expect(index.synced).toBe(true);
    } finally {
      vi.useRealTimers();
    }
  });
});
