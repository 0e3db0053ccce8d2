import { RRuleTemporal } from "rrule-temporal";
import { invalid } from "./input.ts";

// Recurring windows: an RFC 5545 RRULE, a first occurrence (a local date-time in an IANA time
// zone) and a duration. rrule-temporal (built on Temporal) expands the rule in the zone; the
// rule text is parsed and bounded here first, because the library accepts unknown parts
// silently and reports some bad values only as "Non-finite days: NaN".
//
// Daylight saving, as RFC 5545 says (tested in recurrence.test.ts, both transitions, two zones):
// an occurrence whose local start does not exist (the skipped hour) is left out and does not
// count; one whose local start happens twice starts at the first of the two; a dtstart in the
// skipped hour is read with the offset before the gap (02:30 → 03:30 summer time) and later
// occurrences keep dtstart's 02:30.

export const MAX_RRULE_LENGTH = 512;
export const MIN_DURATION_SECONDS = 60;
export const MAX_DURATION_SECONDS = 31 * 86_400;
export const MAX_PREVIEW = 100;
// A preview lists occurrences within this many years.
export const PREVIEW_YEARS = 10;

// The caps handed to the library: each question below is answered within them or refused.
const MAX_ITERATIONS = 5_000;
const MAX_CANDIDATES = 200_000;
// Overlapping or touching occurrences are merged into one open span, at most this many.
const MAX_MERGED = 400;

export interface Recurrence {
  rrule: string;
  // "2026-01-03T02:00" or "2026-01-03T02:00:00", local to timeZone.
  dtstart: string;
  durationSeconds: number;
  timeZone: string;
}

export interface Occurrence {
  start: Date;
  end: Date;
  // "2026-03-29T03:00:00+02:00": start and end as people in the time zone read them.
  localStart: string;
  localEnd: string;
}

export interface Schedule {
  // The span open at `now` (start ≤ now < end), merged with the occurrences that overlap or
  // touch it; undefined when none is open.
  openAt(now: Date): { start: Date; until: Date } | undefined;
  // The first occurrence starting strictly after `after`, or undefined.
  nextStart(after: Date): Date | undefined;
  // Up to `count` occurrences still open at `after` or starting after it (within PREVIEW_YEARS),
  // in order.
  occurrences(after: Date, count: number): Occurrence[];
}

const ZONES = new Set([...Intl.supportedValuesOf("timeZone"), "UTC"]);
const FREQS = new Set(["DAILY", "WEEKLY", "MONTHLY", "YEARLY"]);
const WEEKDAY = "(?:MO|TU|WE|TH|FR|SA|SU)";
const DTSTART = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?$/;
const UNTIL = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/;
const MAX_LIST = 60;

export function isTimeZone(name: string): boolean {
  return ZONES.has(name);
}

// A list of signed integers, each non-zero (when signed) and within ±max.
function intList(part: string, value: string, min: number, max: number, signed: boolean): string {
  const items = value.split(",");
  if (items.length > MAX_LIST) throw invalid(`rrule ${part} has more than ${MAX_LIST} values`);
  for (const item of items) {
    if (!(signed ? /^[+-]?\d{1,3}$/ : /^\d{1,3}$/).test(item)) throw invalid(`rrule ${part}=${value.slice(0, 40)}: "${item.slice(0, 10)}" is not a number`);
    const n = Math.abs(Number(item));
    if (n < min || n > max || (signed && n === 0)) {
      throw invalid(`rrule ${part}=${value.slice(0, 40)}: ${item} is out of range (${signed ? `±${min}` : min} to ${signed ? `±${max}` : max})`);
    }
  }
  return items.map((i) => String(Number(i))).join(",");
}

// Checks the RRULE value and returns it in a canonical form (parts upper-cased, numbers plain).
export function checkRrule(rrule: string): { canonical: string; freq: string } {
  if (rrule.length === 0) throw invalid('rrule is required, for example "FREQ=WEEKLY;BYDAY=SA"');
  if (rrule.length > MAX_RRULE_LENGTH) throw invalid(`rrule is longer than ${MAX_RRULE_LENGTH} characters`);
  const body = rrule.trim().replace(/^RRULE:/i, "");
  const parts = new Map<string, string>();
  for (const piece of body.split(";")) {
    const eq = piece.indexOf("=");
    if (eq <= 0) throw invalid(`rrule part "${piece.slice(0, 40)}" is not NAME=VALUE (parts are separated by ";")`);
    const name = piece.slice(0, eq).trim().toUpperCase();
    const value = piece.slice(eq + 1).trim().toUpperCase();
    if (parts.has(name)) throw invalid(`rrule names ${name} twice`);
    parts.set(name, value);
  }
  const freq = parts.get("FREQ");
  if (!freq) throw invalid('rrule has no FREQ (for example "FREQ=WEEKLY;BYDAY=SA")');
  if (!FREQS.has(freq)) {
    throw invalid(`rrule FREQ=${freq.slice(0, 20)} is not accepted: a window repeats DAILY, WEEKLY, MONTHLY or YEARLY (for several times a day, make several windows)`);
  }
  const out: string[] = [`FREQ=${freq}`];
  for (const [name, value] of parts) {
    switch (name) {
      case "FREQ":
        break;
      case "INTERVAL":
        if (!/^\d{1,3}$/.test(value) || Number(value) < 1) throw invalid(`rrule INTERVAL=${value.slice(0, 20)} must be from 1 to 999`);
        out.push(`INTERVAL=${Number(value)}`);
        break;
      case "COUNT":
        if (!/^\d{1,5}$/.test(value) || Number(value) < 1 || Number(value) > 10_000) throw invalid(`rrule COUNT=${value.slice(0, 20)} must be from 1 to 10000`);
        out.push(`COUNT=${Number(value)}`);
        break;
      case "UNTIL": {
        const m = UNTIL.exec(value);
        if (!m || !validDateTime(+m[1]!, +m[2]!, +m[3]!, +m[4]!, +m[5]!, +m[6]!)) {
          throw invalid(`rrule UNTIL=${value.slice(0, 20)} must be a UTC date-time such as 20271231T235959Z (RFC 5545, with a time zone)`);
        }
        out.push(`UNTIL=${value}`);
        break;
      }
      case "BYDAY": {
        const items = value.split(",");
        if (items.length > MAX_LIST) throw invalid(`rrule BYDAY has more than ${MAX_LIST} values`);
        for (const item of items) {
          const m = new RegExp(`^([+-]?\\d{1,2})?${WEEKDAY}$`).exec(item);
          if (!m) throw invalid(`rrule BYDAY=${value.slice(0, 40)}: "${item.slice(0, 10)}" is not a weekday such as SA, 1SU or -1FR`);
          if (m[1] !== undefined) {
            const n = Math.abs(Number(m[1]));
            if (n < 1 || n > 53) throw invalid(`rrule BYDAY=${value.slice(0, 40)}: ${item} is out of range (±1 to ±53 before the weekday)`);
            if (freq !== "MONTHLY" && freq !== "YEARLY") throw invalid(`rrule BYDAY=${item} numbers a weekday, which only FREQ=MONTHLY or YEARLY allows`);
          }
        }
        out.push(`BYDAY=${value}`);
        break;
      }
      case "BYMONTHDAY":
        if (freq === "WEEKLY") throw invalid("rrule BYMONTHDAY is not allowed with FREQ=WEEKLY (RFC 5545)");
        out.push(`BYMONTHDAY=${intList(name, value, 1, 31, true)}`);
        break;
      case "BYYEARDAY":
        if (freq !== "YEARLY") throw invalid("rrule BYYEARDAY is allowed only with FREQ=YEARLY here");
        out.push(`BYYEARDAY=${intList(name, value, 1, 366, true)}`);
        break;
      case "BYWEEKNO":
        if (freq !== "YEARLY") throw invalid("rrule BYWEEKNO is allowed only with FREQ=YEARLY (RFC 5545)");
        out.push(`BYWEEKNO=${intList(name, value, 1, 53, true)}`);
        break;
      case "BYMONTH":
        out.push(`BYMONTH=${intList(name, value, 1, 12, false)}`);
        break;
      case "BYSETPOS":
        out.push(`BYSETPOS=${intList(name, value, 1, 366, true)}`);
        break;
      case "WKST":
        if (!new RegExp(`^${WEEKDAY}$`).test(value)) throw invalid(`rrule WKST=${value.slice(0, 10)} is not a weekday (MO to SU)`);
        out.push(`WKST=${value}`);
        break;
      case "BYHOUR":
      case "BYMINUTE":
      case "BYSECOND":
        throw invalid(`rrule ${name} is not accepted: every occurrence starts at dtstart's time of day (for several times a day, make several windows)`);
      default:
        throw invalid(`rrule part ${name.slice(0, 20)} is not supported (FREQ, INTERVAL, COUNT, UNTIL, BYDAY, BYMONTHDAY, BYYEARDAY, BYWEEKNO, BYMONTH, BYSETPOS, WKST)`);
    }
  }
  if (parts.has("COUNT") && parts.has("UNTIL")) throw invalid("rrule may have COUNT or UNTIL, not both (RFC 5545)");
  if (parts.has("BYSETPOS") && ![...parts.keys()].some((p) => p.startsWith("BY") && p !== "BYSETPOS")) {
    throw invalid("rrule BYSETPOS needs another BY part to pick from (RFC 5545)");
  }
  return { canonical: out.join(";"), freq };
}

function validDateTime(y: number, mo: number, d: number, h: number, mi: number, s: number): boolean {
  if (mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || s > 59) return false;
  return d <= new Date(Date.UTC(y, mo, 0)).getUTCDate();
}

// The dtstart's fields, checked: a real calendar date and time, years 1970 to 2199.
export function checkDtstart(dtstart: string) {
  const m = DTSTART.exec(dtstart);
  const [y, mo, d, h, mi, s] = m ? [m[1], m[2], m[3], m[4], m[5], m[6] ?? "0"].map(Number) as [number, number, number, number, number, number] : [];
  if (!m || y === undefined || !validDateTime(y, mo!, d!, h!, mi!, s!) || y < 1970 || y > 2199) {
    throw invalid(`dtstart "${dtstart.slice(0, 40)}" must be a local date and time such as 2026-01-03T02:00 (years 1970 to 2199, no offset: the time zone says it)`);
  }
  return { year: y, month: mo!, day: d!, hour: h!, minute: mi!, second: s! };
}

export function checkTimeZone(timeZone: string): string {
  if (!isTimeZone(timeZone)) {
    throw invalid(`time_zone "${timeZone.slice(0, 64)}" is not an IANA time zone this server knows (for example Europe/Berlin, America/New_York or UTC)`);
  }
  return timeZone;
}

export function checkDuration(seconds: number): number {
  if (!Number.isInteger(seconds) || seconds < MIN_DURATION_SECONDS || seconds > MAX_DURATION_SECONDS) {
    throw invalid(`duration must be from 1 minute to 31 days, in whole seconds (got ${seconds} seconds)`);
  }
  return seconds;
}

const pad = (n: number, w = 2) => String(n).padStart(w, "0");

// "2026-03-29T03:00:00+02:00": a time as read in the zone, with its offset.
function localTime(zone: string): (d: Date) => string {
  const format = new Intl.DateTimeFormat("en-US", {
    timeZone: zone,
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hourCycle: "h23",
    timeZoneName: "longOffset",
  });
  return (d) => {
    const p = Object.fromEntries(format.formatToParts(d).map((x) => [x.type, x.value]));
    const offset = p.timeZoneName === "GMT" ? "+00:00" : (p.timeZoneName ?? "").replace("GMT", "");
    return `${p.year}-${p.month}-${p.day}T${p.hour}:${p.minute}:${p.second}${offset}`;
  };
}

// A recurrence checked and written the one way it is stored: the rule canonical, dtstart with
// seconds ("2026-01-03T02:00:00").
export function normaliseRecurrence(r: Recurrence): Recurrence {
  compileRecurrence(r);
  const t = checkDtstart(r.dtstart);
  const dtstart = `${pad(t.year, 4)}-${pad(t.month)}-${pad(t.day)}T${pad(t.hour)}:${pad(t.minute)}:${pad(t.second)}`;
  return { rrule: checkRrule(r.rrule).canonical, dtstart, durationSeconds: r.durationSeconds, timeZone: r.timeZone };
}

// Checks a recurrence and compiles it. Every check refuses with InvalidArgument and a message
// naming the field; a rule that yields nothing within the caps is refused too.
export function compileRecurrence(r: Recurrence): Schedule {
  const { canonical } = checkRrule(r.rrule);
  const t = checkDtstart(r.dtstart);
  const zone = checkTimeZone(r.timeZone);
  const durationMs = checkDuration(r.durationSeconds) * 1000;
  // BYHOUR/BYMINUTE/BYSECOND spelled out from dtstart (what RFC 5545 defaults them to): with
  // the defaults, rrule-temporal takes the time of a dtstart moved out of the skipped hour
  // (03:30) for every later occurrence instead of dtstart's own (02:30). includeDtstart: RFC
  // 5545 counts dtstart as the first occurrence, also when the rule would not produce it.
  const ics =
    `DTSTART;TZID=${zone}:${pad(t.year, 4)}${pad(t.month)}${pad(t.day)}T${pad(t.hour)}${pad(t.minute)}${pad(t.second)}\n` +
    `RRULE:${canonical};BYHOUR=${t.hour};BYMINUTE=${t.minute};BYSECOND=${t.second}`;
  let rule: RRuleTemporal;
  try {
    rule = new RRuleTemporal({ rruleString: ics, includeDtstart: true, maxIterations: MAX_ITERATIONS, maxCandidateEvaluations: MAX_CANDIDATES });
  } catch (err) {
    throw invalid(`rrule "${r.rrule.slice(0, 80)}" cannot be used: ${err instanceof Error ? err.message.slice(0, 120) : "invalid"}`);
  }
  // The library throws when a question needs more than its caps (a rule that almost never matches).
  const bounded = <T>(fn: () => T): T => {
    try {
      return fn();
    } catch (err) {
      throw invalid(`rrule "${r.rrule.slice(0, 80)}" needs too many steps to find its occurrences; simplify it (${err instanceof Error ? err.message.slice(0, 80) : "error"})`);
    }
  };
  const next = (after: Date): Date | undefined => {
    const found = bounded(() => rule.next(after, false));
    return found ? new Date(found.epochMilliseconds) : undefined;
  };
  // Starts of occurrences open at `at`: those starting in (at - duration, at].
  const openStarts = (at: Date): Date[] =>
    bounded(() => rule.between(new Date(at.getTime() - durationMs + 1), at, true)).map((z) => new Date(z.epochMilliseconds));
  const local = localTime(zone);
  const occurrence = (start: Date): Occurrence => {
    const end = new Date(start.getTime() + durationMs);
    return { start, end, localStart: local(start), localEnd: local(end) };
  };

  // Refused now rather than on every later question: a rule whose second occurrence is out of
  // reach of the caps ("FREQ=MONTHLY;BYMONTH=2;BYMONTHDAY=31").
  const first = next(new Date(Date.UTC(t.year, t.month - 1, t.day) - 2 * 86_400_000));
  if (first) next(first);

  return {
    openAt(now) {
      const starts = openStarts(now);
      if (starts.length === 0) return undefined;
      const start = starts[0]!;
      let until = new Date(starts[starts.length - 1]!.getTime() + durationMs);
      let cursor = starts[starts.length - 1]!;
      for (let i = 0; i < MAX_MERGED; i++) {
        const n = next(cursor);
        if (!n || n > until) break;
        until = new Date(Math.max(until.getTime(), n.getTime() + durationMs));
        cursor = n;
      }
      return { start, until };
    },
    nextStart: next,
    occurrences(after, count) {
      const n = Math.min(Math.max(count, 0), MAX_PREVIEW);
      const found = openStarts(after).slice(0, n).map(occurrence);
      let cursor = after;
      const horizon = after.getTime() + PREVIEW_YEARS * 366 * 86_400_000;
      while (found.length < n) {
        const start = next(cursor);
        if (!start || start.getTime() > horizon) break;
        found.push(occurrence(start));
        cursor = start;
      }
      return found;
    },
  };
}
