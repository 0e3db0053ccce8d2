import { getEventListeners } from "node:events";
import { describe, expect, it } from "vitest";
import { createWakeups } from "./wakeups.ts";

describe("wakeups", () => {
  it("wake the agent's waiters only, and time out otherwise", async () => {
    const w = createWakeups();
    const never = new AbortController().signal;
    const a = w.wait("a", 5_000, never);
    const b = w.wait("b", 20, never);
    expect(w.waiting()).toBe(2);
    w.notify("a");
    expect(await a).toBe(true);
    expect(await b).toBe(false);
    expect(w.waiting()).toBe(0);
  });

  it("end on abort and on close", async () => {
    const w = createWakeups();
    const ac = new AbortController();
    const aborted = w.wait("a", 5_000, ac.signal);
    ac.abort();
    expect(await aborted).toBe(false);
    const closing = w.wait("a", 5_000, new AbortController().signal);
    w.close();
    expect(await closing).toBe(false);
    expect(await w.wait("a", 5_000, new AbortController().signal)).toBe(false);
  });

  it("return at once for a notification that came after the mark (a command queued while the poll claimed)", async () => {
    const w = createWakeups();
    const never = new AbortController().signal;
    const mark = w.mark();
    w.notify("a");
    expect(await w.wait("a", 5_000, never, mark)).toBe(true);
    // Not for another agent, nor for a notification from before the mark.
    expect(await w.wait("b", 20, never, mark)).toBe(false);
    expect(await w.wait("a", 20, never, w.mark())).toBe(false);
  });

  it("wake everyone on notifyAll, including a poll about to wait with an earlier mark", async () => {
    const onNotify: string[] = [];
    const w = createWakeups((id) => onNotify.push(id));
    const never = new AbortController().signal;
    const a = w.wait("a", 5_000, never);
    const b = w.wait("b", 5_000, never);
    const mark = w.mark();
    w.notifyAll();
    expect(await a).toBe(true);
    expect(await b).toBe(true);
    expect(await w.wait("c", 5_000, never, mark)).toBe(true);
    expect(await w.wait("c", 20, never, w.mark())).toBe(false);
    w.notify("d");
    expect(onNotify).toEqual(["d"]);
  });

  it("free a cancelled wait at once: its abort listener goes and a later notify wakes nothing", async () => {
    const w = createWakeups();
    const ac = new AbortController();
    const other = new AbortController();
    const cancelled = w.wait("a", 60_000, ac.signal);
    const kept = w.wait("a", 60_000, other.signal);
    expect(getEventListeners(ac.signal, "abort")).toHaveLength(1);
    ac.abort();
    expect(await cancelled).toBe(false);
    expect(getEventListeners(ac.signal, "abort")).toHaveLength(0);
    expect(w.waiting()).toBe(1);
    // The agent's other wait is still there and still wakes; its listener goes with it.
    w.notify("a");
    expect(await kept).toBe(true);
    expect(getEventListeners(other.signal, "abort")).toHaveLength(0);
    expect(w.waiting()).toBe(0);
  });

  it("time out each wait at its own deadline, whatever order they came in and whichever left early", async () => {
    const w = createWakeups();
    const never = new AbortController().signal;
    const ended: string[] = [];
    const track = (name: string, ms: number, signal = never) => w.wait(name, ms, signal).then((woken) => ended.push(`${name}:${woken}`));
    const early = new AbortController();
    const all = [track("c", 90), track("a", 30), track("gone", 10, early.signal), track("b", 60), track("woken", 40)];
    early.abort();
    w.notify("woken");
    await Promise.all(all);
    expect(ended).toEqual(["gone:false", "woken:true", "a:false", "b:false", "c:false"]);
    expect(w.waiting()).toBe(0);
  });
});
