import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { CommandSchema, type SignedCommand, SignedCommandSchema } from "@redflag/gen/command_pb";
import {
  AgentConfigSchema,
  type SignedAgentConfig,
  SignedAgentConfigSchema,
  type SignedKeySet,
  SignedKeySetSchema,
  TrustedKeySetSchema,
} from "@redflag/gen/common_pb";
import * as ed from "@noble/ed25519";
import { createHash } from "node:crypto";
import { pae, type SigningKey } from "../../agent/test/support/fake-control-plane.ts";

// The cases of the verification fuzzer (agent-verify.test.ts): what goes into one poll answer,
// and what the agent must do with each piece. Everything here is built from the seed and from
// the fuzzer's own model of the agent; nothing is taken from agent/src, so a mistake there
// cannot hide itself in the expectations.

ed.hashes.sha512 = (m: Uint8Array) => new Uint8Array(createHash("sha512").update(m).digest());

const COMMAND = "redflag.v1.Command";
const KEY_SET = "redflag.v1.TrustedKeySet";
const AGENT_CONFIG = "redflag.v1.AgentConfig";
// A key set holds at most 8 keys. The agent remembers the last 64 keys it dropped; the fuzzer
// offers back only recently retired ones, well inside that memory.
const MAX_KEYS = 8;
const RECENT_RETIRED = 32;
// Results the fuzzer treats as still remembered: the agent keeps the last 200 acknowledged ones.
const RECENT_RESULTS = 100;

// sfc32 seeded with SHA-256 of the seed text: the same seed gives the same rounds.
export function createRng(seed: string) {
  const h = createHash("sha256").update(seed).digest();
  let a = h.readUInt32LE(0);
  let b = h.readUInt32LE(4);
  let c = h.readUInt32LE(8);
  let d = h.readUInt32LE(12);
  const next = (): number => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
  for (let i = 0; i < 12; i++) next();
  const int = (min: number, max: number) => min + Math.floor(next() * (max - min + 1));
  return {
    int,
    chance: (p: number) => next() < p,
    pick: <T>(items: readonly T[]): T => items[int(0, items.length - 1)]!,
    bytes: (n: number) => Uint8Array.from({ length: n }, () => int(0, 255)),
    shuffle<T>(items: readonly T[]): T[] {
      const out = [...items];
      for (let i = out.length - 1; i > 0; i--) {
        const j = int(0, i);
        [out[i], out[j]] = [out[j]!, out[i]!];
      }
      return out;
    },
    uuid(): string {
      const hex = Buffer.from(Uint8Array.from({ length: 16 }, () => int(0, 255))).toString("hex");
      return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-a${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
    },
  };
}
export type Rng = ReturnType<typeof createRng>;

export function keyFrom(rng: Rng): SigningKey {
  const secretKey = rng.bytes(32);
  const publicKey = ed.getPublicKey(secretKey);
  return { keyId: createHash("sha256").update(publicKey).digest("hex").slice(0, 16), publicKey, secretKey };
}

const sign = (key: SigningKey, type: string, body: Uint8Array) => ed.sign(pae(type, body), key.secretKey);

// The revision an agent reports for its pinned keys: 53 bits of SHA-256 over the sorted key IDs
// joined by "," (the control plane's definition).
export function keySetRevision(keyIds: Iterable<string>): bigint {
  return createHash("sha256").update([...keyIds].sort().join(",")).digest().readBigUInt64BE(0) & 0x1f_ffff_ffff_ffffn;
}


// A verified delivery the fuzzer saw go out, kept to replay later.
export interface Delivery {
  id: string;
  signed: SignedCommand;
}

// What the fuzzer knows the agent's state is (and must be).
export interface Model {
  agentId: string;
  lastSequence: bigint;
  // The control plane's counter: every sequence handed out so far is below it.
  nextSequence: bigint;
  // Pinned keys in the order the agent holds them.
  pins: SigningKey[];
  keySetIssued: number;
  retired: string[];
  // Every key ever pinned, to offer retired ones again.
  everPinned: Map<string, SigningKey>;
  // Key sets the agent accepted (the one from registration first), to replay.
  keySets: SignedKeySet[];
  // Keys that are never pinned: a man in the middle's.
  strangers: SigningKey[];
  config: { revision: bigint; issueNanos: bigint };
  // Genuine configs handed out, applied or not, to replay.
  configs: { signed: SignedAgentConfig; issueNanos: bigint }[];
  configRevisions: bigint;
  // The latest config issue time handed out, in nanoseconds: genuine configs are issued after it.
  configClock: bigint;
  // The one result the agent gave for each command, serialized.
  results: Map<string, Uint8Array>;
  // Command IDs by when their result was last acknowledged, oldest first.
  resultOrder: string[];
  deliveries: Delivery[];
  nonces: Uint8Array[];
}

export const recentResultIds = (model: Model) => model.resultOrder.slice(-RECENT_RESULTS);
export const forgottenResultIds = (model: Model) => model.resultOrder.slice(0, Math.max(0, model.resultOrder.length - RECENT_RESULTS * 2));

export interface Item {
  label: string;
  // The ID the agent can read from the bytes; undefined when the case makes it unpredictable.
  id: string | undefined;
  // Whether the signature verifies with the keys pinned once this poll's key set is handled.
  verified: boolean;
  // Set for a genuine new command: it must run.
  sequence?: bigint;
  // The rejection a fresh ID must get.
  reason?: string | RegExp;
  build(nonce: Uint8Array): SignedCommand;
  // What build() produced, for later replays.
  signed?: SignedCommand;
}

export interface KeySetPlan {
  label: string;
  signed: SignedKeySet;
  // The keys it names: when it is refused, none of the new ones may sign anything.
  offered: SigningKey[];
  // Set when the agent must take it: the new pins in order, and its issue time.
  accept?: { keys: SigningKey[]; issued: number };
}

export interface ConfigPlan {
  label: string;
  signed: SignedAgentConfig;
  // Set when the agent must apply it.
  apply?: { revision: bigint; issueNanos: bigint };
}

export interface RoundPlan {
  keySet: KeySetPlan | undefined;
  config: ConfigPlan | undefined;
  items: Item[];
  // The control plane's sequence counter after this poll.
  nextSequence: bigint;
}

export type Action = MessageInitShape<typeof CommandSchema>["action"];

export interface PlanOptions {
  // The action of the i-th item of the round (the end-to-end rounds name a package per item).
  action(i: number): Action;
  maxItems: number;
}

const sigFails = (keyId: string) => `signature does not verify with pinned key ${keyId}`;
// The agent shortens untrusted text for its messages: printable ASCII, at most 64 characters.
const unknownKey = (keyId: string) => {
  const clean = keyId.replace(/[^\x20-\x7e]/g, "?");
  return `unknown signing key ${clean.length > 64 ? `${clean.slice(0, 64)}…` : clean || '""'}`;
};

interface Fields {
  id: string;
  agentId: string;
  sequence: bigint;
  issueTime?: Date | undefined;
  expireTime?: Date | undefined;
  nonce: Uint8Array;
  action: Action;
  firstSequence?: bigint;
  timeoutSeconds?: number;
}

const commandBytes = (f: Fields) =>
  toBinary(
    CommandSchema,
    create(CommandSchema, {
      id: f.id,
      agentId: f.agentId,
      sequence: f.sequence,
      issueTime: f.issueTime ? timestampFromDate(f.issueTime) : undefined,
      expireTime: f.expireTime ? timestampFromDate(f.expireTime) : undefined,
      nonce: f.nonce,
      timeoutSeconds: f.timeoutSeconds ?? 0,
      firstSequence: f.firstSequence ?? 0n,
      action: f.action,
    }),
  );
const envelope = (command: Uint8Array, signature: Uint8Array, keyId: string) => create(SignedCommandSchema, { command, signature, keyId });
// Field 1 (the ID) comes first in the bytes: tag, one length byte, then the ID.
const idEnd = (id: string) => 2 + Buffer.byteLength(id);

export function planRound(rng: Rng, model: Model, opts: PlanOptions): RoundPlan {
  const keySet = rng.chance(0.15) ? planKeySet(rng, model) : undefined;
  // Keys first, as the agent handles them: the config and commands of this answer are checked
  // with the keys this key set leaves pinned.
  const pinsAfter = keySet?.accept ? keySet.accept.keys : model.pins;
  const pinnedAfter = new Set(pinsAfter.map((k) => k.keyId));
  const dropped = model.pins.filter((k) => !pinnedAfter.has(k.keyId));
  const refusedNew = keySet && !keySet.accept ? newKeysOf(keySet, model) : [];
  // Often together with a key set: a config signed by a key the set brings in is verified with it.
  const config = rng.chance(keySet ? 0.5 : 0.12) ? planConfig(rng, model, pinsAfter, dropped) : undefined;

  const last = model.lastSequence;
  let seq = model.nextSequence > last ? model.nextSequence : last + 1n;
  const nextSeq = () => {
    seq += BigInt(rng.int(0, 2));
    return seq++;
  };
  let index = 0;
  const action = () => opts.action(index++);
  const pinned = () => rng.pick(pinsAfter);
  const now = () => Date.now();
  // A command as the control plane would sign it for this poll, with `over` changed. An empty
  // nonce here means "this poll's".
  const fresh = (over: Partial<Fields> = {}): Fields => ({
    id: over.id ?? rng.uuid(),
    agentId: over.agentId ?? model.agentId,
    sequence: over.sequence ?? nextSeq(),
    issueTime: "issueTime" in over ? over.issueTime : new Date(now()),
    expireTime: "expireTime" in over ? over.expireTime : new Date(now() + 600_000),
    nonce: over.nonce ?? new Uint8Array(0),
    action: over.action ?? action(),
    ...(over.firstSequence === undefined ? {} : { firstSequence: over.firstSequence }),
    ...(over.timeoutSeconds === undefined ? {} : { timeoutSeconds: over.timeoutSeconds }),
  });
  const signedBy = (key: SigningKey, fields: Fields, nonce: Uint8Array, mutate?: (bytes: Uint8Array) => Uint8Array) => {
    const f = { ...fields, nonce: fields.nonce.length > 0 ? fields.nonce : nonce };
    const bytes: Uint8Array = mutate ? mutate(commandBytes(f)) : commandBytes(f);
    return envelope(bytes, sign(key, COMMAND, bytes), key.keyId);
  };

  const items: Item[] = [];
  const count = rng.int(0, opts.maxItems);
  const genuineCount = count === 0 ? 0 : rng.int(0, Math.min(4, count));
  const genuine: Item[] = [];
  for (let i = 0; i < genuineCount; i++) {
    const key = pinned();
    const f = fresh({ timeoutSeconds: rng.chance(0.2) ? rng.int(1, 3600) : 0 });
    if (rng.chance(0.2)) f.firstSequence = BigInt(rng.int(1, Number(f.sequence)));
    // No issue time is allowed, and so is one a little ahead (clock skew between hosts).
    const issueAhead = rng.chance(0.1) ? undefined : rng.chance(0.1) ? rng.int(1, 30_000) : 0;
    // Fields this agent does not know yet are kept, not refused: newer control planes add them.
    const unknownField = rng.chance(0.1) ? Uint8Array.of(0x98, 0x06, rng.int(0, 127)) : undefined;
    const item: Item = {
      label: `genuine${issueAhead === undefined ? ", without an issue time" : issueAhead > 0 ? ", issued a little ahead" : ""}${unknownField ? ", with an unknown field" : ""}`,
      id: f.id,
      verified: true,
      sequence: f.sequence,
      build: (nonce) =>
        signedBy(
          key,
          { ...f, issueTime: issueAhead === undefined ? undefined : new Date(now() + issueAhead), expireTime: new Date(now() + 600_000) },
          nonce,
          unknownField ? (b) => Buffer.concat([b, unknownField]) : undefined,
        ),
    };
    genuine.push(item);
    items.push(item);
  }

  const recent = recentResultIds(model).filter((id) => !genuine.some((g) => g.id === id));
  const known = new Set(recent);
  // Whose ID a tampered or replayed piece carries: a fresh one, a genuine command's of this very
  // poll (a forged copy must not take its place), or one the agent already answered.
  const someId = (): string => {
    const roll = rng.int(0, 9);
    if (roll < 2 && genuine.length > 0) return rng.pick(genuine).id!;
    if (roll < 3 && recent.length > 0) return rng.pick(recent);
    return rng.uuid();
  };

  type Maker = () => Item | undefined;
  const tampered: Maker[] = [
    () => {
      const key = pinned();
      const f = fresh({ id: someId() });
      // Two times in three the flip lands after the ID, so the rejection can be named.
      const afterId = rng.chance(0.67);
      return {
        label: afterId ? "tampered: a byte after the ID flipped" : "tampered: a byte of the ID flipped",
        id: afterId ? f.id : undefined,
        verified: false,
        ...(afterId ? { reason: sigFails(key.keyId) } : {}),
        build: (nonce) => {
          const s = signedBy(key, f, nonce);
          const at = afterId ? rng.int(idEnd(f.id), s.command.length - 1) : rng.int(0, idEnd(f.id) - 1);
          s.command[at]! ^= rng.int(1, 255);
          return s;
        },
      };
    },
    () => {
      const key = pinned();
      const f = fresh({ id: someId() });
      return {
        label: "tampered: the signature flipped",
        id: f.id,
        verified: false,
        reason: sigFails(key.keyId),
        build: (nonce) => {
          const s = signedBy(key, f, nonce);
          s.signature[rng.int(0, 63)]! ^= 1 << rng.int(0, 7);
          return s;
        },
      };
    },
    () => {
      if (pinsAfter.length < 2) return undefined;
      const key = pinned();
      const other = rng.pick(pinsAfter.filter((k) => k !== key));
      const f = fresh({ id: someId() });
      return {
        label: "tampered: key ID swapped to another pinned key",
        id: f.id,
        verified: false,
        reason: sigFails(other.keyId),
        build: (nonce) => ({ ...signedBy(key, f, nonce), keyId: other.keyId }),
      };
    },
    () => {
      const stranger = rng.pick(model.strangers);
      const claim = rng.chance(0.5) ? pinned().keyId : stranger.keyId;
      const f = fresh({ id: someId() });
      return {
        label: claim === stranger.keyId ? "tampered: re-signed by an unpinned key" : "tampered: re-signed by an unpinned key, naming a pinned one",
        id: f.id,
        verified: false,
        reason: claim === stranger.keyId ? unknownKey(claim) : sigFails(claim),
        build: (nonce) => ({ ...signedBy(stranger, f, nonce), keyId: claim }),
      };
    },
    () => {
      const key = pinned();
      const type = rng.pick([KEY_SET, AGENT_CONFIG, "redflag.v1.RenewPayload", "redflag.v1.Command "]);
      const f = fresh({ id: someId() });
      return {
        label: `tampered: signed as ${JSON.stringify(type)}`,
        id: f.id,
        verified: false,
        reason: sigFails(key.keyId),
        build: (nonce) => {
          const bytes = commandBytes({ ...f, nonce });
          return envelope(bytes, sign(key, type, bytes), key.keyId);
        },
      };
    },
    () => {
      const key = pinned();
      const f = fresh({ id: someId() });
      const other = fresh();
      return {
        label: "tampered: another command's signature",
        id: f.id,
        verified: false,
        reason: sigFails(key.keyId),
        build: (nonce) => envelope(commandBytes({ ...f, nonce }), sign(key, COMMAND, commandBytes({ ...other, nonce })), key.keyId),
      };
    },
    () => {
      if (dropped.length === 0 && refusedNew.length === 0) return undefined;
      const useDropped = dropped.length > 0 && (refusedNew.length === 0 || rng.chance(0.5));
      const key = useDropped ? rng.pick(dropped) : rng.pick(refusedNew);
      const f = fresh({ id: someId() });
      return {
        label: useDropped ? "signed by a key this poll's key set drops" : "signed by a key of this poll's refused key set",
        id: f.id,
        verified: false,
        reason: unknownKey(key.keyId),
        build: (nonce) => signedBy(key, f, nonce),
      };
    },
  ];

  const replays: Maker[] = [
    () => {
      const pool = model.deliveries.filter((d) => known.has(d.id));
      if (pool.length === 0) return undefined;
      const d = rng.pick(pool);
      return {
        label: "replay: a delivery from an earlier poll, byte for byte",
        id: d.id,
        verified: pinnedAfter.has(d.signed.keyId),
        build: () => clone(d.signed),
      };
    },
    () => {
      const forgotten = new Set(forgottenResultIds(model));
      const pool = model.deliveries.filter((d) => forgotten.has(d.id));
      if (pool.length === 0) return undefined;
      const d = rng.pick(pool);
      return { label: "replay: a delivery the agent may have forgotten", id: d.id, verified: pinnedAfter.has(d.signed.keyId), build: () => clone(d.signed) };
    },
    () => {
      if (last < 1n) return undefined;
      const key = pinned();
      const sequence = rng.chance(0.3) ? last : BigInt(rng.int(1, Number(last)));
      const f = fresh({ sequence });
      return {
        label: sequence === last ? "replay: the last executed sequence again" : "replay: a lower sequence",
        id: f.id,
        verified: true,
        reason: `sequence ${sequence} is not above last executed ${last}`,
        build: (nonce) => signedBy(key, f, nonce),
      };
    },
    () => {
      // What the control plane first handed out for a command it now delivers again, freshly
      // numbered and nonce'd: the first delivery was lost on the way, and comes back now.
      const g = genuine.length > 0 ? rng.pick(genuine) : undefined;
      if (!g || g.sequence! < 2n) return undefined;
      const key = pinned();
      const sequence = BigInt(rng.int(1, Number(g.sequence!) - 1));
      const nonce = model.nonces.length > 0 && rng.chance(0.8) ? rng.pick(model.nonces) : rng.bytes(32);
      const expired = rng.chance(0.3);
      const f = fresh({
        id: g.id!,
        sequence,
        nonce,
        ...(expired ? { expireTime: new Date(now() - rng.int(1, 600_000)) } : {}),
      });
      return {
        label: `replay: the first delivery of a command this poll delivers again (sequence ${sequence}${expired ? ", expired" : ""})`,
        id: g.id,
        verified: true,
        build: () => signedBy(key, { ...f, ...(expired ? {} : { expireTime: new Date(now() + 600_000) }) }, nonce),
      };
    },
  ];

  const redelivery: Maker = () => {
    if (recent.length === 0) return undefined;
    const id = rng.pick(recent);
    const key = pinned();
    const f = fresh({ id, firstSequence: BigInt(rng.int(1, Number(last > 0n ? last : 1n))) });
    return { label: "re-delivery of a command the agent answered", id, verified: true, build: (nonce) => signedBy(key, f, nonce) };
  };

  const faults: Maker[] = [
    () => {
      const key = pinned();
      const f = fresh({ agentId: rng.chance(0.2) ? "" : rng.uuid() });
      return { label: "for another agent", id: f.id, verified: true, reason: "command is for another agent", build: (nonce) => signedBy(key, f, nonce) };
    },
    () => {
      const key = pinned();
      const noExpiry = rng.chance(0.2);
      const ago = rng.int(1, 86_400_000);
      const f = fresh();
      return {
        label: noExpiry ? "without an expiry time" : "expired",
        id: f.id,
        verified: true,
        reason: noExpiry ? "command has no expiry time" : /^command expired at .*; this host's clock says /,
        build: (nonce) => signedBy(key, { ...f, expireTime: noExpiry ? undefined : new Date(now() - ago) }, nonce),
      };
    },
    () => {
      const key = pinned();
      const ahead = rng.int(90_000, 86_400_000);
      const f = fresh();
      return {
        label: "issued in the future",
        id: f.id,
        verified: true,
        reason: /^command issued in the future at .*; this host's clock says /,
        build: (nonce) => signedBy(key, { ...f, issueTime: new Date(now() + ahead) }, nonce),
      };
    },
    () => {
      const key = pinned();
      const kind = rng.int(0, 4);
      const f = fresh();
      const labels = ["nonce of an earlier poll", "random nonce", "empty nonce", "nonce cut short", "nonce with a bit flipped"];
      return {
        label: labels[kind]!,
        id: f.id,
        verified: true,
        reason: "nonce does not match this poll",
        build: (nonce) => {
          let other: Uint8Array;
          if (kind === 0 && model.nonces.length > 0) other = rng.pick(model.nonces);
          else if (kind <= 1) other = rng.bytes(32);
          else if (kind === 2) other = new Uint8Array(0);
          else if (kind === 3) other = nonce.slice(0, rng.int(1, nonce.length - 1));
          else {
            other = nonce.slice();
            other[rng.int(0, other.length - 1)]! ^= 1 << rng.int(0, 7);
          }
          const bytes = commandBytes({ ...f, nonce: other });
          return envelope(bytes, sign(key, COMMAND, bytes), key.keyId);
        },
      };
    },
  ];

  const garbage: Maker[] = [
    () => {
      const keyId = rng.chance(0.7) ? pinned().keyId : rng.pick(model.strangers).keyId;
      const bytes = rng.bytes(rng.int(0, 300));
      return { label: "garbage bytes", id: undefined, verified: false, build: () => envelope(bytes, rng.bytes(64), keyId) };
    },
    () => ({ label: "empty everything", id: undefined, verified: false, build: () => envelope(new Uint8Array(0), new Uint8Array(0), "") }),
    () => {
      const key = pinned();
      const f = fresh({ id: someId() });
      const keepId = rng.chance(0.7);
      return {
        label: "truncated protobuf",
        id: keepId ? f.id : undefined,
        verified: false,
        ...(keepId ? { reason: sigFails(key.keyId) } : {}),
        build: (nonce) => {
          const s = signedBy(key, f, nonce);
          const end = keepId ? rng.int(idEnd(f.id), s.command.length - 1) : rng.int(0, idEnd(f.id) - 1);
          return { ...s, command: s.command.slice(0, end) };
        },
      };
    },
    () => {
      const key = pinned();
      const f = fresh({ id: someId() });
      const length = rng.pick([0, 0, 1, 63, 65, 128]);
      return {
        label: length === 0 ? "empty signature" : `signature of ${length} bytes`,
        id: f.id,
        verified: false,
        reason: sigFails(key.keyId),
        build: (nonce) => {
          const s = signedBy(key, f, nonce);
          const signature = new Uint8Array(length);
          signature.set(s.signature.slice(0, length));
          return { ...s, signature };
        },
      };
    },
    () => {
      const key = pinned();
      const f = fresh({ id: someId() });
      const [what, keyId] = rng.pick([
        ["empty", ""],
        ["a space", " "],
        ["a pinned one with a newline", `${key.keyId}\n`],
        ["a pinned one after a space", ` ${key.keyId}`],
        ["a pinned one cut short", key.keyId.slice(0, 15)],
        ["5000 characters long", "k".repeat(5000)],
        ["control characters", "\u0000\u202e"],
      ] as const);
      return {
        label: `key ID: ${what}`,
        id: f.id,
        verified: false,
        reason: unknownKey(keyId),
        build: (nonce) => ({ ...signedBy(key, f, nonce), keyId }),
      };
    },
    () => {
      const key = pinned();
      const bytes = rng.bytes(rng.int(0, 200));
      return { label: "signed bytes that are not a command", id: undefined, verified: true, build: () => envelope(bytes, sign(key, COMMAND, bytes), key.keyId) };
    },
    () => {
      const key = pinned();
      const id = rng.pick(["", "x".repeat(129), "line\nbreak", "\u00e9t\u00e9", "tab\tid"]);
      const f = fresh({ id });
      return { label: `signed command with the unusable ID ${JSON.stringify(id.slice(0, 12))}`, id: undefined, verified: true, build: (nonce) => signedBy(key, f, nonce) };
    },
  ];

  const groups: [number, Maker[]][] = [
    [25, tampered],
    [14, replays],
    [6, [redelivery]],
    [20, faults],
    [12, garbage],
  ];
  const total = groups.reduce((sum, [w]) => sum + w, 0);
  while (items.length < count) {
    let roll = rng.int(1, total);
    const group = groups.find(([w]) => (roll -= w) <= 0)![1];
    const item = rng.pick(group)();
    if (item) items.push(item);
  }
  return { keySet, config, items: rng.shuffle(items), nextSequence: seq };
}

const newKeysOf = (plan: KeySetPlan, model: Model): SigningKey[] => plan.offered.filter((k) => !model.pins.some((p) => p.keyId === k.keyId));

function keySetBytes(keys: SigningKey[], issued: number | undefined, extra: { keyId?: string; publicKey?: Uint8Array }[] = []) {
  return toBinary(
    TrustedKeySetSchema,
    create(TrustedKeySetSchema, {
      keys: [...keys.map((k) => ({ keyId: k.keyId, publicKey: k.publicKey })), ...extra],
      issueTime: issued === undefined ? undefined : timestampFromDate(new Date(issued)),
    }),
  );
}
const signedSet = (bytes: Uint8Array, signers: { keyId: string; signature: Uint8Array }[]) => create(SignedKeySetSchema, { keySet: bytes, signatures: signers });

function planKeySet(rng: Rng, model: Model): KeySetPlan {
  const issued = Math.max(Date.now(), model.keySetIssued + 1) + rng.int(0, 5);
  const freshKeys = () => Array.from({ length: rng.int(1, 2) }, () => keyFrom(rng));
  const signersFrom = (bytes: Uint8Array, keys: SigningKey[]) => keys.map((k) => ({ keyId: k.keyId, signature: sign(k, KEY_SET, bytes) }));
  const someSigners = () => rng.shuffle(model.pins).slice(0, rng.int(1, model.pins.length));
  const offer = (label: string, signed: SignedKeySet, offered: SigningKey[]): KeySetPlan => ({ label, signed, offered });

  const genuine = () => {
    const kept = rng.shuffle(model.pins).slice(0, rng.int(0, Math.min(model.pins.length, MAX_KEYS - 2)));
    const keys = rng.shuffle([...kept, ...freshKeys()]);
    return { keys, bytes: keySetBytes(keys, issued) };
  };
  const roll = rng.int(0, 19);
  if (roll < 7) {
    const { keys, bytes } = genuine();
    const signatures = signersFrom(bytes, someSigners());
    // Signatures the agent must look past: a stranger's, and a pinned key's over other bytes.
    if (rng.chance(0.3)) signatures.unshift({ keyId: rng.pick(model.strangers).keyId, signature: sign(rng.pick(model.strangers), KEY_SET, bytes) });
    if (rng.chance(0.3)) signatures.unshift({ keyId: rng.pick(model.pins).keyId, signature: rng.bytes(64) });
    return { label: "genuine newer key set", signed: signedSet(bytes, signatures), offered: keys, accept: { keys, issued } };
  }
  if (roll < 9) {
    const old = rng.chance(0.3) ? model.keySets.at(-1)! : rng.pick(model.keySets);
    return { label: old === model.keySets.at(-1) ? "the key set in force, again" : "an older key set, replayed", signed: clone(old), offered: [] };
  }
  if (roll < 11) {
    // Signed by a pinned key, naming no retired key: only its issue time tells it is old.
    const keys = rng.shuffle(model.pins).slice(0, rng.int(1, model.pins.length));
    const bytes = keySetBytes(keys, model.keySetIssued - rng.int(0, 86_400_000));
    return offer("an older key set of keys still pinned", signedSet(bytes, signersFrom(bytes, someSigners())), keys);
  }
  if (roll < 13) {
    const { keys, bytes } = genuine();
    const stranger = rng.pick(model.strangers);
    const claim = rng.chance(0.5) ? rng.pick(model.pins).keyId : stranger.keyId;
    return offer("key set signed by an unpinned key", signedSet(bytes, [{ keyId: claim, signature: sign(stranger, KEY_SET, bytes) }]), keys);
  }
  if (roll < 15 && model.retired.length > 0) {
    const back = model.everPinned.get(rng.pick(model.retired.slice(-RECENT_RETIRED)))!;
    const keys = rng.shuffle([...model.pins.slice(0, MAX_KEYS - 1), back]);
    const bytes = keySetBytes(keys, issued);
    return offer("key set bringing back a retired key", signedSet(bytes, signersFrom(bytes, someSigners())), keys);
  }
  if (roll < 17) {
    const { keys, bytes } = genuine();
    const signatures = signersFrom(bytes, someSigners());
    const flipSignature = rng.chance(0.4);
    if (flipSignature) for (const s of signatures) s.signature[rng.int(0, 63)]! ^= 1 << rng.int(0, 7);
    else bytes[rng.int(0, bytes.length - 1)]! ^= rng.int(1, 255);
    return offer(flipSignature ? "key set with its signatures flipped" : "key set with a byte flipped", signedSet(bytes, signatures), keys);
  }
  // Signed by a pinned key, and still wrong.
  const kind = rng.int(0, 3);
  const keys = [...model.pins.slice(0, 2), ...freshKeys()];
  const stranger = rng.pick(model.strangers);
  const bytes =
    kind === 0
      ? keySetBytes(keys, undefined)
      : kind === 1
        ? keySetBytes(keys, issued, [{ keyId: stranger.keyId, publicKey: rng.pick(model.pins).publicKey }])
        : kind === 2
          ? keySetBytes([...keys, ...Array.from({ length: MAX_KEYS }, () => keyFrom(rng))], issued)
          : keySetBytes(keys, issued, [{ keyId: "", publicKey: new Uint8Array(0) }]);
  const signer = rng.pick(model.pins);
  const signatures = rng.chance(0.2) ? [{ keyId: signer.keyId, signature: sign(signer, COMMAND, bytes) }] : signersFrom(bytes, [signer]);
  const labels = ["key set without an issue time", "key set naming a key by another key's ID", "key set of more than 8 keys", "key set with an empty key"];
  return offer(labels[kind]!, signedSet(bytes, signatures), keys);
}

function planConfig(rng: Rng, model: Model, pinsAfter: SigningKey[], dropped: SigningKey[]): ConfigPlan {
  const nowNanos = () => BigInt(Date.now()) * 1_000_000n;
  const issue = (ahead = 0n) => {
    const t = (nowNanos() > model.configClock ? nowNanos() : model.configClock) + 1000n + BigInt(rng.int(0, 999)) * 1000n + ahead;
    return t;
  };
  const build = (fields: { revision: bigint; agentId: string; issueNanos: bigint | undefined; key: SigningKey; type?: string; keyId?: string }) => {
    const bytes = toBinary(
      AgentConfigSchema,
      create(AgentConfigSchema, {
        revision: fields.revision,
        pollIntervalSeconds: rng.int(1, 600),
        commandTimeoutSeconds: rng.int(30, 3600),
        subsystems: [{ name: "apt", enabled: true, timeoutSeconds: 120 }],
        holds: Array.from({ length: rng.int(0, 3) }, () => ({ source: rng.pick(["apt", "*"]), name: `held-${rng.int(0, 999)}*`, reason: "fuzz" })),
        agentId: fields.agentId,
        issueTime:
          fields.issueNanos === undefined
            ? undefined
            : { seconds: fields.issueNanos / 1_000_000_000n, nanos: Number(fields.issueNanos % 1_000_000_000n) },
      }),
    );
    return create(SignedAgentConfigSchema, { config: bytes, signature: sign(fields.key, fields.type ?? AGENT_CONFIG, bytes), keyId: fields.keyId ?? fields.key.keyId });
  };
  const revision = () => ++model.configRevisions;
  const incoming = pinsAfter.filter((k) => !model.pins.includes(k));
  const key = incoming.length > 0 && rng.chance(0.6) ? rng.pick(incoming) : rng.pick(pinsAfter);
  const genuine = (ahead = 0n) => {
    const issueNanos = issue(ahead);
    const r = revision();
    const signed = build({ revision: r, agentId: model.agentId, issueNanos, key });
    model.configClock = issueNanos;
    model.configs.push({ signed, issueNanos });
    return { signed, apply: { revision: r, issueNanos } };
  };
  if (dropped.length > 0 && rng.chance(0.3)) {
    return { label: "config signed by a key this poll's key set drops", signed: build({ revision: revision(), agentId: model.agentId, issueNanos: issue(), key: rng.pick(dropped) }) };
  }
  const roll = rng.int(0, 19);
  if (roll < 7) return { label: "genuine newer config", ...genuine() };
  if (roll < 8) return { label: "genuine config issued a few seconds ahead", ...genuine(BigInt(rng.int(1, 5)) * 1_000_000_000n) };
  if (roll < 10 && model.configs.length > 0) {
    const old = rng.chance(0.3) ? model.configs.find((c) => c.issueNanos === model.config.issueNanos)! : rng.pick(model.configs);
    // Every genuine config is applied when it is handed out, so one handed out before is the one
    // in force (nothing to apply) or an older one (refused).
    return { label: old.issueNanos === model.config.issueNanos ? "the config in force, again" : "an older config, replayed", signed: clone(old.signed) };
  }
  if (roll < 12) {
    const stranger = rng.pick(model.strangers);
    const claim = rng.chance(0.5) ? key.keyId : stranger.keyId;
    return { label: "config signed by an unpinned key", signed: build({ revision: revision(), agentId: model.agentId, issueNanos: issue(), key: stranger, keyId: claim }) };
  }
  if (roll < 13) return { label: "config for another agent", signed: build({ revision: revision(), agentId: rng.uuid(), issueNanos: issue(), key }) };
  if (roll < 14) {
    return { label: "config issued far in the future", signed: build({ revision: revision(), agentId: model.agentId, issueNanos: issue(BigInt(rng.int(120, 86_400)) * 1_000_000_000n), key }) };
  }
  if (roll < 15) return { label: "config without an issue time", signed: build({ revision: revision(), agentId: model.agentId, issueNanos: undefined, key }) };
  if (roll < 17) return { label: "config signed as a command", signed: build({ revision: revision(), agentId: model.agentId, issueNanos: issue(), key, type: COMMAND }) };
  if (roll < 18 && pinsAfter.length > 1) {
    const other = rng.pick(pinsAfter.filter((k) => k !== key));
    return { label: "config naming another pinned key", signed: build({ revision: revision(), agentId: model.agentId, issueNanos: issue(), key, keyId: other.keyId }) };
  }
  const signed = build({ revision: revision(), agentId: model.agentId, issueNanos: issue(), key });
  if (rng.chance(0.5)) signed.config[rng.int(0, signed.config.length - 1)]! ^= rng.int(1, 255);
  else signed.signature[rng.int(0, 63)]! ^= 1 << rng.int(0, 7);
  return { label: "config with a byte flipped", signed };
}

function clone<T extends SignedCommand | SignedKeySet | SignedAgentConfig>(message: T): T {
  return structuredClone(message);
}
