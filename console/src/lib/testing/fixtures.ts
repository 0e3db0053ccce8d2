// Shared by the Activity, Command and Updates component tests: agents, commands as the control plane
// returns them, and a WatchEvents feed a test pushes events into.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { CommandCreator, CommandInfoSchema, type CommandInfo, type WatchEventsResponseSchema } from "@redflag/gen/command_service_pb";
import { PrincipalSchema, Role } from "@redflag/gen/identity_pb";
import { session } from "#lib/session.svelte.ts";

export const WEB = "5b0e8f0a-1f4e-4c55-9a43-0c2f6b1d7e01";
export const DB = "8c3d2a91-6b7e-4f10-8e22-3a9b4c5d6e02";
export const AGENTS = [
  { id: DB, hostname: "db-1", group: "data", tags: ["prod"] },
  { id: WEB, hostname: "web-1", group: "web", tags: ["prod", "edge"] },
];

export const ago = (ms: number) => timestampFromDate(new Date(Date.now() - ms));

export function signIn(role: Role, username = "ana") {
  session.principal = create(PrincipalSchema, { kind: "session", role, user: { username } });
}

export const command = (init: MessageInitShape<typeof CommandInfoSchema>): CommandInfo =>
  create(CommandInfoSchema, { createTime: ago(60_000), createdBy: "ana", createdByKind: CommandCreator.PERSON, ...init });

// The same command, later: `changes` may hold plain inits (a result) as create() takes them.
export function evolve(base: CommandInfo, changes: MessageInitShape<typeof CommandInfoSchema>): CommandInfo {
  const { $typeName: _, ...fields } = base;
  return create(CommandInfoSchema, { ...fields, ...(changes as object) } as MessageInitShape<typeof CommandInfoSchema>);
}

type Event = MessageInitShape<typeof WatchEventsResponseSchema>;

// A WatchEvents stream as the server sends it: a keepalive at once, then whatever the test
// pushes, until the client goes away.
export class EventFeed {
  #queue: Event[] = [];
  #wake: (() => void) | undefined;
  opened = 0;
  push(...events: Event[]) {
    this.#queue.push(...events);
    this.#wake?.();
  }
  changed(...commands: CommandInfo[]) {
    this.push(...commands.map((c) => ({ kind: "command", time: ago(0), command: c })));
  }
  async *stream(signal: AbortSignal): AsyncGenerator<Event> {
    this.opened++;
    yield { kind: "keepalive", time: ago(0) };
    while (!signal.aborted) {
      while (this.#queue.length > 0) yield this.#queue.shift()!;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        signal.addEventListener("abort", () => resolve(), { once: true });
      });
    }
  }
}
