import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { checkRrule, compileRecurrence, type Recurrence } from "./recurrence.ts";

const HOUR = 3600;
const schedule = (r: Partial<Recurrence>) => compileRecurrence({ rrule: "FREQ=DAILY", dtstart: "2026-01-01T02:30", durationSeconds: HOUR, timeZone: "UTC", ...r });
const starts = (r: Partial<Recurrence>, after: string, count: number) => schedule(r).occurrences(new Date(after), count).map((o) => o.start.toISOString());

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.InvalidArgument);
    return (err as ConnectError).rawMessage;
  }
  throw new Error("not refused");
}

describe("daylight-saving transitions (RFC 5545)", () => {
  it("Europe/Berlin, spring forward (2026-03-29, 02:00 → 03:00): a daily 02:30 is left out that day and does not count", () => {
    const berlin = { dtstart: "2026-03-27T02:30", timeZone: "Europe/Berlin" };
    expect(starts(berlin, "2026-03-26T00:00Z", 4)).toEqual([
      "2026-03-27T01:30:00.000Z", // 02:30 CET
      "2026-03-28T01:30:00.000Z",
      "2026-03-30T00:30:00.000Z", // 02:30 CEST; the 29th has no 02:30
      "2026-03-31T00:30:00.000Z",
    ]);
    // COUNT=3 still gives three occurrences: the one left out is not counted.
    expect(starts({ ...berlin, rrule: "FREQ=DAILY;COUNT=3" }, "2026-03-26T00:00Z", 10)).toHaveLength(3);
    expect(starts({ ...berlin, rrule: "FREQ=DAILY;COUNT=3" }, "2026-03-26T00:00Z", 10)[2]).toBe("2026-03-30T00:30:00.000Z");
  });

  it("Europe/Berlin, fall back (2026-10-25, 03:00 → 02:00): a daily 02:30 starts once, at the first 02:30 (summer time)", () => {
    const occ = schedule({ dtstart: "2026-10-23T02:30", timeZone: "Europe/Berlin" }).occurrences(new Date("2026-10-24T12:00Z"), 2);
    expect(occ.map((o) => o.start.toISOString())).toEqual(["2026-10-25T00:30:00.000Z", "2026-10-26T01:30:00.000Z"]);
    expect(occ.map((o) => o.localStart)).toEqual(["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]);
    // The duration is elapsed time: one hour after the first 02:30 is the second 02:30.
    expect(occ[0]!.localEnd).toBe("2026-10-25T02:30:00+01:00");
  });

  it("America/New_York, spring forward (2026-03-08, 02:00 → 03:00): a daily 02:30 is left out that day", () => {
    expect(starts({ dtstart: "2026-03-01T02:30", timeZone: "America/New_York" }, "2026-03-07T00:00Z", 3)).toEqual([
      "2026-03-07T07:30:00.000Z", // 02:30 EST
      "2026-03-09T06:30:00.000Z", // 02:30 EDT
      "2026-03-10T06:30:00.000Z",
    ]);
  });

  it("America/New_York, fall back (2026-11-01, 02:00 → 01:00): a daily 01:30 starts once, at the first 01:30 (EDT)", () => {
    const occ = schedule({ dtstart: "2026-10-01T01:30", timeZone: "America/New_York" }).occurrences(new Date("2026-10-31T12:00Z"), 2);
    expect(occ.map((o) => o.start.toISOString())).toEqual(["2026-11-01T05:30:00.000Z", "2026-11-02T06:30:00.000Z"]);
    expect(occ.map((o) => o.localStart)).toEqual(["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]);
  });

  it("a dtstart in the skipped hour is read with the offset before the gap; later occurrences keep its 02:30", () => {
    // RFC 5545 3.3.5: TZID=America/New_York:20070311T023000 is 03:30 EDT. rrule-temporal alone
    // would move every later occurrence to 03:30 too (recurrence.ts spells BYHOUR etc. out).
    const occ = schedule({ dtstart: "2026-03-08T02:30", timeZone: "America/New_York" }).occurrences(new Date("2026-03-01T00:00Z"), 3);
    expect(occ.map((o) => o.localStart)).toEqual(["2026-03-08T03:30:00-04:00", "2026-03-09T02:30:00-04:00", "2026-03-10T02:30:00-04:00"]);
    const berlin = schedule({ dtstart: "2026-03-29T02:30", timeZone: "Europe/Berlin" }).occurrences(new Date("2026-03-01T00:00Z"), 2);
    expect(berlin.map((o) => o.localStart)).toEqual(["2026-03-29T03:30:00+02:00", "2026-03-30T02:30:00+02:00"]);
  });

  it("a weekly window keeps its local time across both transitions", () => {
    const sat = { rrule: "FREQ=WEEKLY;BYDAY=SA", dtstart: "2026-03-21T22:00", timeZone: "Europe/Berlin" };
    expect(schedule(sat).occurrences(new Date("2026-03-20T00:00Z"), 2).map((o) => o.localStart)).toEqual(["2026-03-21T22:00:00+01:00", "2026-03-28T22:00:00+01:00"]);
    expect(schedule(sat).occurrences(new Date("2026-03-29T00:00Z"), 1).map((o) => o.start.toISOString())).toEqual(["2026-04-04T20:00:00.000Z"]);
    expect(schedule(sat).occurrences(new Date("2026-10-30T00:00Z"), 1).map((o) => o.start.toISOString())).toEqual(["2026-10-31T21:00:00.000Z"]);
  });
});

describe("open windows", () => {
  const nightly = schedule({ rrule: "FREQ=DAILY", dtstart: "2026-01-01T22:00", durationSeconds: 4 * HOUR, timeZone: "Europe/Berlin" });

  it("is open from its start (inclusive) to its end (exclusive), across midnight", () => {
    expect(nightly.openAt(new Date("2026-06-10T19:59:59Z"))).toBeUndefined();
    expect(nightly.openAt(new Date("2026-06-10T20:00:00Z"))).toEqual({ start: new Date("2026-06-10T20:00:00Z"), until: new Date("2026-06-11T00:00:00Z") });
    expect(nightly.openAt(new Date("2026-06-10T23:59:59Z"))?.until).toEqual(new Date("2026-06-11T00:00:00Z"));
    expect(nightly.openAt(new Date("2026-06-11T00:00:00Z"))).toBeUndefined();
  });

  it("merges occurrences that overlap or touch into one open span", () => {
    const always = schedule({ rrule: "FREQ=DAILY;COUNT=3", dtstart: "2026-06-01T00:00", durationSeconds: 86_400, timeZone: "UTC" });
    expect(always.openAt(new Date("2026-06-01T12:00Z"))).toEqual({ start: new Date("2026-06-01T00:00Z"), until: new Date("2026-06-04T00:00Z") });
  });

  it("is closed before dtstart and after COUNT or UNTIL", () => {
    const short = schedule({ rrule: "FREQ=DAILY;UNTIL=20260603T000000Z", dtstart: "2026-06-01T10:00", durationSeconds: HOUR });
    expect(short.openAt(new Date("2026-05-31T10:30Z"))).toBeUndefined();
    expect(short.openAt(new Date("2026-06-02T10:30Z"))).toBeDefined();
    expect(short.openAt(new Date("2026-06-03T10:30Z"))).toBeUndefined();
    expect(short.nextStart(new Date("2026-06-02T10:30Z"))).toBeUndefined();
  });

  it("previews occurrences still open at `after` first, then the next ones, at most 100", () => {
    const occ = nightly.occurrences(new Date("2026-06-10T21:00Z"), 2);
    expect(occ.map((o) => o.start.toISOString())).toEqual(["2026-06-10T20:00:00.000Z", "2026-06-11T20:00:00.000Z"]);
    expect(nightly.occurrences(new Date("2026-06-10T21:00Z"), 1000)).toHaveLength(100);
  });
});

describe("bounds", () => {
  it("answers quickly for a dtstart decades ago and a rule that never matches", () => {
    const started = performance.now();
    const old = schedule({ dtstart: "1970-01-01T02:30", rrule: "FREQ=WEEKLY;BYDAY=MO,WE" });
    expect(old.occurrences(new Date("2099-06-01T00:00Z"), 100)).toHaveLength(100);
    expect(old.openAt(new Date("2099-06-01T02:45Z"))).toBeDefined();
    // February 30 never comes: refused when compiled, within the caps.
    expect(refusal(() => schedule({ dtstart: "2026-01-01T00:00", rrule: "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30" }))).toMatch(/needs too many steps/);
    expect(performance.now() - started).toBeLessThan(5000);
  });

  it("refuses a rule whose occurrences are out of reach when it is compiled, and previews ten years at most", () => {
    expect(refusal(() => schedule({ rrule: "FREQ=MONTHLY;BYMONTH=2;BYMONTHDAY=31" }))).toMatch(/needs too many steps to find its occurrences; simplify it/);
    const leap = schedule({ rrule: "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29", dtstart: "2024-02-29T00:00" });
    expect(leap.occurrences(new Date("2026-01-01T00:00Z"), 100).map((o) => o.start.toISOString().slice(0, 10))).toEqual(["2028-02-29", "2032-02-29"]);
  });

  it("counts dtstart once when the rule produces it too", () => {
    expect(starts({ rrule: "FREQ=WEEKLY;BYDAY=SA;COUNT=2", dtstart: "2026-03-07T10:00" }, "2026-03-01T00:00Z", 5)).toEqual([
      "2026-03-07T10:00:00.000Z",
      "2026-03-14T10:00:00.000Z",
    ]);
    // A dtstart the rule would not produce is still the first occurrence (RFC 5545).
    expect(starts({ rrule: "FREQ=WEEKLY;BYDAY=SA;COUNT=2", dtstart: "2026-03-04T10:00" }, "2026-03-01T00:00Z", 5)).toEqual([
      "2026-03-04T10:00:00.000Z",
      "2026-03-07T10:00:00.000Z",
    ]);
  });
});

describe("refusals", () => {
  it("refuses a bad rule with a message naming the part", () => {
    expect(refusal(() => checkRrule(""))).toMatch(/rrule is required/);
    expect(refusal(() => checkRrule("FREQ=DAILY;BYFOO=1"))).toMatch(/BYFOO is not supported/);
    expect(refusal(() => checkRrule("FREQ=HOURLY"))).toMatch(/FREQ=HOURLY is not accepted/);
    expect(refusal(() => checkRrule("FREQ=DAILY;INTERVAL=x"))).toBe("rrule INTERVAL=X must be from 1 to 999");
    expect(refusal(() => checkRrule("FREQ=DAILY;BYHOUR=2"))).toMatch(/BYHOUR is not accepted: every occurrence starts at dtstart's time of day/);
    expect(refusal(() => checkRrule("FREQ=DAILY;COUNT=2;UNTIL=20270101T000000Z"))).toMatch(/COUNT or UNTIL, not both/);
    expect(refusal(() => checkRrule("FREQ=DAILY;UNTIL=20270101"))).toMatch(/UTC date-time such as 20271231T235959Z/);
    expect(refusal(() => checkRrule("FREQ=WEEKLY;BYDAY=1SU"))).toMatch(/only FREQ=MONTHLY or YEARLY/);
    expect(refusal(() => checkRrule("FREQ=MONTHLY;BYMONTHDAY=32"))).toMatch(/32 is out of range/);
    expect(refusal(() => checkRrule("FREQ=DAILY;FREQ=WEEKLY"))).toMatch(/names FREQ twice/);
    expect(refusal(() => checkRrule("WEEKLY"))).toMatch(/is not NAME=VALUE/);
    expect(refusal(() => checkRrule(`FREQ=DAILY;BYMONTH=${"1,".repeat(300)}1`))).toMatch(/longer than 512 characters/);
    expect(checkRrule("rrule:freq=monthly;byday=1su;interval=02").canonical).toBe("FREQ=MONTHLY;BYDAY=1SU;INTERVAL=2");
  });

  it("refuses a bad dtstart, time zone or duration", () => {
    expect(refusal(() => schedule({ dtstart: "2026-02-30T02:00" }))).toMatch(/dtstart "2026-02-30T02:00" must be a local date and time/);
    expect(refusal(() => schedule({ dtstart: "2026-01-01T02:00+01:00" }))).toMatch(/no offset/);
    expect(refusal(() => schedule({ timeZone: "Mars/Olympus" }))).toMatch(/time_zone "Mars\/Olympus" is not an IANA time zone/);
    expect(refusal(() => schedule({ durationSeconds: 59 }))).toMatch(/duration must be from 1 minute to 31 days/);
    expect(refusal(() => schedule({ durationSeconds: 32 * 86_400 }))).toMatch(/duration must be from 1 minute to 31 days/);
  });
});
