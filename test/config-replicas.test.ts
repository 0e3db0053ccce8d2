import type { AgentConfig } from "@redflag/gen/common_pb";
import { describe, expect, it } from "vitest";
import { keyIdOf } from "@redflag/common/signing/key-ids";
import { openSignedConfig } from "../agent/src/trust/signed-config.ts";
import { loadConfig } from "../control-plane/src/config.ts";
import { createAgentConfigs } from "../control-plane/src/domain/agent-config.ts";
import { createSettings } from "../control-plane/src/settings.ts";
import { generateKeyPair } from "../control-plane/src/signing/keys.ts";
import { createCommandSigner } from "../control-plane/src/signing/signer.ts";
import type { Prisma } from "../control-plane/src/store/types.ts";

// The control plane's config cache on several replicas (and across a restart) against the
// agent's check, with the database reads answered by the test: each replica reads when the test
// says, so one can hold a view from before a change while another has the change.
function replica() {
  const reads: ((rows: unknown[]) => void)[] = [];
  const read = () => new Promise<unknown[]>((resolve) => reads.push(resolve));
  const db = { hold: { findMany: read }, agent: { findMany: read } } as unknown as Prisma;
  // The environment's default settings, never reloaded: the only reads are the ones answered here.
  const configs = createAgentConfigs(db, createSettings(db, loadConfig({}, "/srv"), Infinity), 3_600_000);
  // Answers the holds query, then the overrides query.
  const answer = async (holds: unknown[]) => {
    for (const rows of [holds, []]) {
      while (reads.length < 1) await new Promise((r) => setTimeout(r, 1));
      reads.shift()!(rows);
    }
  };
  return { configs, answer };
}

const hold = (name: string) => ({ source: "apt", name, reason: "freeze", agentId: null, createdAt: new Date() });
const tick = () => new Promise((r) => setTimeout(r, 2));

describe("signed configs across replicas and restarts", () => {
  const key = generateKeyPair();
  const signer = createCommandSigner(key, [key]);
  const pins = new Map([[keyIdOf(key.publicKey), key.publicKey]]);
  const agentId = "5b8e1c0a-3d2f-4e6a-9b7c-1a2b3c4d5e6f";
  const offer = async (r: ReturnType<typeof replica>, holds?: unknown[]) => {
    const signed = r.configs.signedForAgent(agentId, signer);
    if (holds) await r.answer(holds);
    return signed;
  };

  it("never take an agent back to the view a stale replica read before a change, and do not resend the same content", async () => {
    const a = replica();
    const b = replica();
    let current: AgentConfig | undefined;
    const apply = async (r: ReturnType<typeof replica>, holds?: unknown[]) => {
      const check = openSignedConfig(await offer(r, holds), pins, { agentId, current, now: new Date() });
      if (check.ok) current = check.config;
      return check;
    };

    // B reads before openssl is held; A reads after. The agent takes A's view first.
    const stale = offer(b, []);
    await stale;
    await tick();
    expect(await apply(a, [hold("openssl")])).toMatchObject({ ok: true });
    expect(current!.holds.map((h) => h.name)).toEqual(["openssl"]);

    // Then it reaches B, which has not heard of the change yet: B's older view is refused.
    const fromB = await apply(b);
    expect(fromB).toMatchObject({ ok: false, reason: expect.stringMatching(/is not newer than the one applied/) });
    expect(current!.holds.map((h) => h.name)).toEqual(["openssl"]);

    // B hears of it and reads again: the same content, issued later; taking it changes nothing.
    b.configs.invalidate();
    await tick();
    expect(await apply(b, [hold("openssl")])).toMatchObject({ ok: true, config: { revision: current!.revision } });

    // A restarted control plane reads the same holds: same revision, so no poll would carry it
    // (pollCommands sends a config only when the agent's revision differs).
    const restarted = replica();
    const next = restarted.configs.forAgent(agentId);
    await restarted.answer([hold("openssl")]);
    expect((await next).revision).toBe(current!.revision);

    // Lifting the hold is a change every replica reads after it: the agent takes it from either.
    await tick();
    a.configs.invalidate();
    expect(await apply(a, [])).toMatchObject({ ok: true, config: { holds: [] } });
  });
});
