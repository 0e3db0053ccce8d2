// Hostile inputs for the RPC fuzzer, all drawn from one seeded generator so a failure can be
// replayed from the seed it prints. Protobuf is written at the wire level (so it can carry what
// no encoder produces: wrong wire types, invalid UTF-8, lengths that lie, unterminated varints,
// stray group markers); JSON is built as text (so it can carry lone surrogates, duplicate keys,
// numbers no double holds, nesting no parser expects).
import { ScalarType, type DescField, type DescMessage } from "@bufbuild/protobuf";
import { gzipSync } from "node:zlib";

export interface Random {
  seed: number;
  // [0, 1)
  next(): number;
  int(max: number): number;
  chance(p: number): boolean;
  pick<T>(items: readonly T[]): T;
  bytes(n: number): Uint8Array;
}

// mulberry32: small, fast, and the same sequence for the same seed on every machine.
export function createRandom(seed: number): Random {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (max: number) => Math.floor(next() * max);
  return {
    seed,
    next,
    int,
    chance: (p) => next() < p,
    pick: (items) => items[int(items.length)]!,
    bytes(n) {
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i++) out[i] = int(256);
      return out;
    },
  };
}

// Grows by doubling; `budget` caps what one input may reach, so nesting and repetition cannot
// build gigabytes (an early version did).
class Writer {
  private buf = new Uint8Array(256);
  length = 0;
  readonly budget: number;
  constructor(budget: number) {
    this.budget = budget;
  }
  get full() {
    return this.length >= this.budget;
  }
  raw(bytes: Uint8Array) {
    const room = Math.max(0, this.budget - this.length);
    const n = Math.min(room, bytes.length);
    if (this.length + n > this.buf.length) {
      let size = this.buf.length * 2;
      while (size < this.length + n) size *= 2;
      const grown = new Uint8Array(size);
      grown.set(this.buf.subarray(0, this.length));
      this.buf = grown;
    }
    this.buf.set(bytes.subarray(0, n), this.length);
    this.length += n;
  }
  byte(b: number) {
    this.raw(Uint8Array.of(b & 0xff));
  }
  varint(v: bigint) {
    let x = BigInt.asUintN(64, v);
    do {
      let b = Number(x & 0x7fn);
      x >>= 7n;
      if (x > 0n) b |= 0x80;
      this.byte(b);
    } while (x > 0n);
  }
  tag(field: number, wire: number) {
    this.varint((BigInt(field) << 3n) | BigInt(wire & 7));
  }
  done(): Uint8Array {
    return this.buf.slice(0, this.length);
  }
}

const EXTREME_VARINTS: readonly bigint[] = [
  0n, 1n, -1n, 127n, 128n, 0x7fffffffn, 0x80000000n, 0xffffffffn, 0x100000000n, 2n ** 53n + 1n, 2n ** 63n - 1n, -(2n ** 63n), 2n ** 64n - 1n,
];

// Strings a handler might mishandle: empty, huge, invalid or odd Unicode, paths, SQL, format
// directives, control characters, and what looks like the IDs and patterns the API takes.
const STRINGS: readonly string[] = [
  "",
  " ",
  "a",
  "*",
  "**",
  "*".repeat(300) + "X",
  "?".repeat(100),
  "[a-z]{1,99999}",
  "(a+)+$",
  "../../../../etc/passwd",
  "..\\..\\windows\\win.ini",
  "%2e%2e%2f",
  "'; DROP TABLE agent; --",
  "\" OR 1=1 --",
  "%s%s%s%n",
  "${jndi:ldap://x}",
  "\u0000",
  "a\u0000b",
  "\u202e\u200b\ufeff",
  "😀".repeat(50),
  "00000000-0000-0000-0000-000000000000",
  "ffffffff-ffff-ffff-ffff-ffffffffffff",
  "not-a-uuid",
  "apt",
  "dnf",
  "winget",
  "linux-x64",
  "0.0.0",
  "999999999.999999999.999999999",
  "-1",
  "1e309",
  "NaN",
  "FREQ=DAILY",
  "24h",
  "-5s",
  "P1D",
  "admin",
  "viewer",
  "http://169.254.169.254/latest/meta-data/",
  "file:///etc/shadow",
  "javascript:alert(1)",
  "<script>alert(1)</script>",
];

// UTF-8 no decoder accepts: a lone continuation byte, an overlong NUL, a surrogate, a cut sequence.
const BAD_UTF8: readonly Uint8Array[] = [
  Uint8Array.of(0x80),
  Uint8Array.of(0xc0, 0x80),
  Uint8Array.of(0xed, 0xa0, 0x80),
  Uint8Array.of(0xf0, 0x9f, 0x98),
  Uint8Array.of(0xff, 0xfe, 0xfd),
  Uint8Array.of(0x61, 0xf8, 0x88, 0x80, 0x80, 0x80),
];

const encoder = new TextEncoder();

function randomText(r: Random): Uint8Array {
  switch (r.int(6)) {
    case 0:
      return r.pick(BAD_UTF8);
    case 1:
      return r.bytes(r.int(64));
    case 2: {
      // Long: up to 64 KiB, now and then up to 1 MiB.
      const n = r.chance(0.05) ? r.int(1 << 20) : r.int(1 << 16);
      return encoder.encode(r.pick(STRINGS).padEnd(n, r.pick(["a", "*", "é", "\u0000"])));
    }
    default:
      return encoder.encode(r.pick(STRINGS));
  }
}

function wireTypeOf(field: DescField): number {
  if (field.fieldKind === "message" || field.fieldKind === "map") return 2;
  if (field.fieldKind === "list" && field.listKind === "message") return 2;
  const scalar = field.fieldKind === "enum" || (field.fieldKind === "list" && field.listKind === "enum") ? ScalarType.INT32 : field.scalar;
  switch (scalar) {
    case ScalarType.STRING:
    case ScalarType.BYTES:
      return 2;
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
    case ScalarType.DOUBLE:
      return 1;
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
    case ScalarType.FLOAT:
      return 5;
    default:
      return 0;
  }
}

function messageOf(field: DescField): DescMessage | undefined {
  if (field.fieldKind === "message") return field.message;
  if (field.fieldKind === "list" && field.listKind === "message") return field.message;
  return undefined;
}

// One length-delimited value: its bytes, with a length prefix that is usually true.
function lengthDelimited(r: Random, w: Writer, body: Uint8Array) {
  const roll = r.next();
  if (roll < 0.9) w.varint(BigInt(body.length));
  else if (roll < 0.95) w.varint(BigInt(body.length) + BigInt(1 + r.int(1 << 30))); // longer than what follows
  else if (roll < 0.98) w.varint(2n ** 64n - 1n);
  else w.raw(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)); // an 11-byte varint
  w.raw(body);
}

function writeValue(r: Random, w: Writer, wire: number, field: DescField | undefined, depth: number) {
  switch (wire) {
    case 0:
      if (r.chance(0.03)) w.raw(Uint8Array.of(0xff, 0xff, 0xff)); // unterminated
      else w.varint(r.chance(0.7) ? r.pick(EXTREME_VARINTS) : BigInt(r.int(1000)));
      return;
    case 1:
      w.raw(r.bytes(r.chance(0.05) ? r.int(8) : 8));
      return;
    case 5:
      w.raw(r.bytes(r.chance(0.05) ? r.int(4) : 4));
      return;
    case 2: {
      const nested = field && messageOf(field);
      if (field?.fieldKind === "map" || nested) {
        const inner = new Writer(w.budget - w.length);
        if (field.fieldKind === "map") {
          // key = 1, value = 2, each written as whatever it is (or is not)
          inner.tag(1, 2);
          lengthDelimited(r, inner, randomText(r));
          inner.tag(2, r.pick([0, 2]));
          if (field.mapKind === "message") inner.raw(protobufFor(r, field.message, depth + 1, inner.budget));
          else lengthDelimited(r, inner, randomText(r));
        } else {
          inner.raw(protobufFor(r, nested!, depth + 1, inner.budget));
        }
        lengthDelimited(r, w, inner.done());
      } else if (field && wireTypeOf(field) !== 2 && r.chance(0.7)) {
        // packed repeated scalars
        const inner = new Writer(4096);
        for (let i = r.int(20); i > 0; i--) writeValue(r, inner, wireTypeOf(field), undefined, depth);
        lengthDelimited(r, w, inner.done());
      } else {
        lengthDelimited(r, w, randomText(r));
      }
      return;
    }
    case 3: {
      // A group: its end marker matches, or not, or never comes.
      const inner = protobufFor(r, undefined, depth + 1, w.budget - w.length);
      w.raw(inner);
      if (r.chance(0.7)) w.tag(field?.number ?? 1 + r.int(100), 4);
      return;
    }
    default:
      // 4 (a stray end-group), 6 and 7 (no such wire type): nothing follows
      return;
  }
}

// A Protobuf body shaped like `desc` (or like nothing), hostile at the wire level.
export function protobufFor(r: Random, desc: DescMessage | undefined, depth = 0, budget = 4 << 20): Uint8Array {
  const w = new Writer(budget);
  // Deep nesting: the same field inside itself, far past any sane depth.
  if (depth === 0 && r.chance(0.03)) {
    const levels = 100 + r.int(10_000);
    const field = desc?.fields.find((f) => messageOf(f)) ?? undefined;
    let inner: Uint8Array = new Uint8Array(0);
    for (let i = 0; i < levels && inner.length < budget; i++) {
      const layer = new Writer(budget);
      layer.tag(field?.number ?? 1, 2);
      layer.varint(BigInt(inner.length));
      layer.raw(inner);
      inner = layer.done();
    }
    return inner;
  }
  const count = depth > 6 ? r.int(2) : r.int(10);
  for (let i = 0; i < count && !w.full; i++) {
    const known = desc && desc.fields.length > 0 && r.chance(0.85) ? r.pick(desc.fields) : undefined;
    const number = known?.number ?? r.pick([0, 1, 2, 3, 15, 16, 19_000, 19_999, 2 ** 29 - 1, 2 ** 29, 1 + r.int(100)]);
    const wire = known && r.chance(0.8) ? wireTypeOf(known) : r.int(8);
    w.tag(number, wire);
    writeValue(r, w, wire, known, depth);
    // the same field again: a repeated scalar, a second oneof member, a message merged twice
    if (known && r.chance(0.1)) {
      w.tag(number, wire);
      writeValue(r, w, wire, known, depth);
    }
  }
  return w.done();
}

const JSON_NUMBERS = ["0", "-0", "1", "-1", "1e309", "-1e309", "1.5", "9007199254740993", "18446744073709551616", "-9223372036854775809", "0.0000001", "1e-400"];
const JSON_STRINGS = [
  '""',
  '"NaN"',
  '"Infinity"',
  '"-Infinity"',
  '"99999999999999999999"',
  '"1.5"',
  '"0x10"',
  '"\\ud800"',
  '"\\udfff\\ud800"',
  '"\\u0000"',
  '"0000-01-01T00:00:00Z"',
  '"10000-01-01T00:00:00Z"',
  '"1970-01-01T00:00:00.0000000001Z"',
  '"2026-13-45T99:99:99Z"',
  '"-315576000001s"',
  '"315576000001s"',
  '"1.0000000001s"',
  '"!!!not base64!!!"',
  '"UNSPECIFIED"',
  '"NO_SUCH_ENUM_VALUE"',
  '"@type"',
];

function jsonValue(r: Random, field: DescField | undefined, depth: number): string {
  const nested = field && messageOf(field);
  if (nested && depth < 6 && r.chance(0.7)) {
    const object = jsonFor(r, nested, depth + 1);
    return field.fieldKind === "list" && r.chance(0.8) ? `[${object}]` : object;
  }
  switch (r.int(9)) {
    case 0:
      return r.pick(JSON_NUMBERS);
    case 1:
      return r.pick(JSON_STRINGS);
    case 2:
      return JSON.stringify(new TextDecoder().decode(randomText(r)));
    case 3:
      return r.pick(["true", "false", "null"]);
    case 4:
      return `[${Array.from({ length: r.int(5) }, () => r.pick(JSON_NUMBERS)).join(",")}]`;
    case 5:
      return `{${JSON.stringify(r.pick(STRINGS))}:${r.pick(JSON_NUMBERS)}}`;
    case 6: {
      const levels = r.chance(0.2) ? 100_000 : 1 + r.int(200);
      return "[".repeat(levels) + "]".repeat(levels);
    }
    default:
      return JSON.stringify(r.pick(STRINGS));
  }
}

// A JSON body shaped like `desc`: its fields (by JSON and proto names) and unknown ones, with
// values of every type but the right one, now and then as text no JSON parser accepts.
export function jsonFor(r: Random, desc: DescMessage | undefined, depth = 0): string {
  if (depth === 0 && r.chance(0.05)) return r.pick(["", "null", "[]", "1", '"x"', "{", "{}}", '{"a":1,', "\ufeff{}", "{\"a\":1}garbage"]);
  const parts: string[] = [];
  for (let i = r.int(8); i > 0; i--) {
    const field = desc && desc.fields.length > 0 && r.chance(0.85) ? r.pick(desc.fields) : undefined;
    const key = field ? (r.chance(0.8) ? field.jsonName : field.name) : r.pick(["", "@type", "__proto__", "constructor", "unknownField", "a".repeat(10_000)]);
    parts.push(`${JSON.stringify(key)}:${jsonValue(r, field, depth)}`);
    if (r.chance(0.05)) parts.push(parts[parts.length - 1]!); // a duplicate key
  }
  return `{${parts.join(",")}}`;
}

// Byte-level damage after the fact: flipped bits, cuts, insertions, a repeated slice.
export function mutateBytes(r: Random, input: Uint8Array, max = 4 << 20): Uint8Array {
  let out = input;
  for (let n = 1 + r.int(3); n > 0; n--) {
    const at = out.length === 0 ? 0 : r.int(out.length);
    switch (r.int(4)) {
      case 0:
        if (out.length > 0) {
          out = out.slice();
          out[at] = out[at]! ^ (1 << r.int(8));
        }
        break;
      case 1:
        out = out.slice(0, at);
        break;
      case 2: {
        const extra = r.bytes(1 + r.int(16));
        const grown = new Uint8Array(out.length + extra.length);
        grown.set(out.subarray(0, at));
        grown.set(extra, at);
        grown.set(out.subarray(at), at + extra.length);
        out = grown;
        break;
      }
      default: {
        const slice = out.subarray(at, Math.min(out.length, at + 1 + r.int(64)));
        if (out.length + slice.length > max) break;
        const grown = new Uint8Array(out.length + slice.length);
        grown.set(out.subarray(0, at));
        grown.set(slice, at);
        grown.set(out.subarray(at), at + slice.length);
        out = grown;
      }
    }
  }
  return out;
}

// One message in the 5-byte envelope Connect streaming, gRPC and gRPC-Web share: the flags and a
// length that is usually true. `compress` gzips the data and sets the compressed flag.
export function envelope(r: Random, data: Uint8Array, opts: { compress?: boolean; flags?: number } = {}): Uint8Array {
  const payload = opts.compress ? new Uint8Array(gzipSync(data)) : data;
  let flags = opts.flags ?? (opts.compress ? 1 : 0);
  if (r.chance(0.05)) flags = r.pick([1, 2, 0x80, 0x81, 0xff]);
  let length = payload.length;
  const roll = r.next();
  if (roll < 0.04) length = payload.length + 1 + r.int(1 << 20);
  else if (roll < 0.06) length = 0xffffffff;
  else if (roll < 0.08 && payload.length > 0) length = r.int(payload.length);
  const out = new Uint8Array(5 + payload.length);
  out[0] = flags;
  new DataView(out.buffer).setUint32(1, length >>> 0);
  out.set(payload, 5);
  return out;
}
