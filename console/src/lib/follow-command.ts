import { Code, ConnectError } from "@connectrpc/connect";
import type { CommandInfo } from "@redflag/gen/command_service_pb";
import { isUnreachable, type Api } from "./api.ts";
import { FINAL_STATES } from "./format.ts";

// Waits `ms` or until aborted, whichever comes first.
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

// Follows one command until it reaches a final state, calling `onChange` with each version
// seen. The live feed (WatchEvents for the command's agent) is used first; every keepalive
// (and every resync, when the server may have missed changes) also re-reads the command, so a
// change made before the feed opened is never missed. When the feed fails or ends, it reads the
// command every `pollMs` instead. Resolves with the final command, or undefined when aborted.
// A refusal of GetCommand (NotFound …) is thrown; an unreachable server is waited out.
export async function followCommand(
  api: Api,
  command: Pick<CommandInfo, "id" | "agentId">,
  signal: AbortSignal,
  onChange: (c: CommandInfo) => void,
  pollMs = 2000,
): Promise<CommandInfo | undefined> {
  const read = async (): Promise<CommandInfo | undefined> => {
    try {
      const c = (await api.commands.getCommand({ id: command.id }, { signal })).command;
      if (c && !signal.aborted) onChange(c);
      return c;
    } catch (err) {
      if (signal.aborted || isUnreachable(err) || ConnectError.from(err).code === Code.Canceled) return undefined;
      throw err;
    }
  };
  try {
    for await (const event of api.commands.watchEvents({ agentId: command.agentId }, { signal })) {
      if (signal.aborted) return undefined;
      if (event.kind === "keepalive" || event.kind === "resync") {
        const c = await read();
        if (c && FINAL_STATES.has(c.state)) return c;
      } else if (event.command?.id === command.id) {
        onChange(event.command);
        if (FINAL_STATES.has(event.command.state)) return event.command;
      }
    }
  } catch (err) {
    if (signal.aborted) return undefined;
    // A refusal to read the command itself is final; a broken feed falls back to polling.
    if (ConnectError.from(err).code === Code.NotFound) throw err;
  }
  while (!signal.aborted) {
    const c = await read();
    if (c && FINAL_STATES.has(c.state)) return c;
    await sleep(pollMs, signal);
  }
  return undefined;
}
