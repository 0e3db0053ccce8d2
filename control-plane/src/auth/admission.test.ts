import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { createAdmission } from "./admission.ts";

// A call that runs until released.
function held() {
  let release!: () => void;
  const done = new Promise<void>((resolve) => (release = resolve));
  return { run: () => done, release };
}

const outcome = (p: Promise<unknown>) =>
  p.then(
    () => "ran",
    (e: unknown) => {
      const err = ConnectError.from(e);
      return `${Code[err.code]} retry-after=${err.metadata.get("retry-after")}: ${err.rawMessage}`;
    },
  );

describe("createAdmission", () => {
  it("runs `concurrency` calls, queues `queue` more and answers the rest at once with Unavailable and a retry hint", async () => {
    const gate = createAdmission({ concurrency: 2, queue: 1, maxWaitMs: 60_000, what: "agents registering" });
    const calls = [held(), held(), held()];
    const running = calls.map((c) => outcome(gate.run(c.run)));
    expect([gate.inFlight, gate.waiting]).toEqual([2, 1]);
    expect(await outcome(gate.run(async () => "never"))).toBe("Unavailable retry-after=1: the control plane is busy with agents registering; retry after 1s");
    // A slot freed goes to the one waiting, in order.
    calls[0]!.release();
    await Promise.resolve();
    expect([gate.inFlight, gate.waiting]).toEqual([2, 0]);
    for (const c of calls) c.release();
    expect(await Promise.all(running)).toEqual(["ran", "ran", "ran"]);
    expect([gate.inFlight, gate.waiting]).toEqual([0, 0]);
  });

  it("refuses a call that waited its longest, and frees its place", async () => {
    const gate = createAdmission({ concurrency: 1, queue: 5, maxWaitMs: 20, what: "renewals" });
    const first = held();
    const running = outcome(gate.run(first.run));
    expect(await outcome(gate.run(async () => "never"))).toMatch(/^Unavailable retry-after=1: the control plane is busy with renewals/);
    expect(gate.waiting).toBe(0);
    first.release();
    expect(await running).toBe("ran");
  });

  it("a call that fails still frees its slot", async () => {
    const gate = createAdmission({ concurrency: 1, queue: 0, maxWaitMs: 1000, what: "x" });
    await expect(gate.run(async () => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
    expect(await outcome(gate.run(async () => "ok"))).toBe("ran");
  });

  it("spreads a herd: the hint is the demand refused in the last 10 s over what the server completed", async () => {
    let now = 0;
    const gate = createAdmission({ concurrency: 1, queue: 0, maxWaitMs: 1000, what: "x", now: () => now });
    // 500 calls completed in this window: 50 a second (more than the 25 one slot is assumed to manage).
    for (let i = 0; i < 500; i++) await gate.run(async () => undefined);
    const first = held();
    const running = gate.run(first.run);
    const hint = async () => {
      const err = await gate.run(async () => undefined).catch((e: unknown) => ConnectError.from(e));
      return Number((err as ConnectError).metadata.get("retry-after"));
    };
    const hints: number[] = [];
    for (let i = 0; i < 100; i++) hints.push(await hint());
    // The 100th refused of a demand of 100 at 50 a second: come back in 2 s (the agent waits 2–4 s).
    expect(hints[0]).toBe(1);
    expect(hints[99]).toBe(2);
    // Fifteen seconds on, half of that window still counts, of demand (51) and of completions
    // (25 a second) alike; thirty on, none of it.
    now = 15_000;
    expect(await hint()).toBe(3);
    now = 40_000;
    expect(await hint()).toBe(1);
    first.release();
    await running;
  });

  it("tells a herd arriving at an idle server seconds, not minutes, and never more than a minute", async () => {
    const gate = createAdmission({ concurrency: 16, queue: 0, maxWaitMs: 1000, what: "x", now: () => 0 });
    const slots = Array.from({ length: 16 }, () => held());
    const running = slots.map((s) => gate.run(s.run));
    const hints: number[] = [];
    for (let i = 0; i < 30_000; i++) {
      const err = await gate.run(async () => undefined).catch((e: unknown) => ConnectError.from(e));
      hints.push(Number((err as ConnectError).metadata.get("retry-after")));
    }
    // Nothing completed yet: 16 slots are taken to manage 400 a second.
    expect(hints[999]).toBe(Math.ceil(1000 / 400));
    expect(hints.at(-1)).toBe(60);
    for (const s of slots) s.release();
    await Promise.all(running);
  });
});
