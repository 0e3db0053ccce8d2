import type { AgentConfig } from "@redflag/gen/common_pb";
import type { Command, CommandOutcome, CommandResult } from "@redflag/gen/command_pb";
import type { Breakers } from "../breaker.ts";
import type { Heartbeat } from "../heartbeat.ts";
import type { SourceLocks } from "../source-lock.ts";
import type { Logger } from "../log.ts";
import type { HostAccess } from "../platform.ts";
import type { PinnedKeys } from "../trust/envelope.ts";

export interface ExecutorContext {
  readonly command: Command;
  // Aborted on timeout or when the agent stops; executors pass it to every child process.
  readonly signal: AbortSignal;
  readonly deadline: number;
  readonly agentConfig: AgentConfig | undefined;
  readonly aptRefresh: boolean;
  // Circuit breakers per subsystem, kept for the life of the agent.
  readonly breakers: Breakers;
  // Serialises package-manager operations per source across commands.
  readonly locks: SourceLocks;
  // The poll loop's heartbeat mode.
  readonly heartbeat: Heartbeat;
  // True for a scan the agent scheduled itself (auto_run), false for an operator's command.
  readonly automatic: boolean;
  // Environment for child processes.
  readonly env: NodeJS.ProcessEnv;
  // How metrics and inventory read the host; this host (through `env`) when not given.
  readonly host?: HostAccess | undefined;
  readonly logger: Logger;
  // Command-signing keys this agent pinned (update_agent verifies its manifest with them).
  readonly pins: PinnedKeys;
  // The control plane this agent is registered with (and the CA it trusts for it): update_agent
  // downloads releases only from there. Undefined outside the poll loop.
  readonly server?: { readonly url: string; readonly caFile: string | undefined } | undefined;
  // Where agent releases live (REDFLAG_AGENT_INSTALL_DIR); undefined when not managed.
  readonly installDir: string | undefined;
  // True in a new release on trial (upgrade-trial.ts): it refuses update_agent until switched to.
  readonly onTrial?: boolean | undefined;
  // The agent's state directory (a reboot's post-hook is kept there across the restart) and its
  // hooks directory; undefined outside the poll loop (then the OS default hooks directory).
  readonly stateDir?: string | undefined;
  readonly hooksDir?: string | undefined;
  // Asks the agent to exit once this command's result is reported (a new release is in place).
  readonly requestRestart: (reason: string) => void;
}

export interface ExecutorOutcome {
  outcome: CommandOutcome;
  message: string;
  detail?: CommandResult["detail"];
}

export type Executor = (ctx: ExecutorContext) => Promise<ExecutorOutcome>;

export type ActionKind = NonNullable<Command["action"]["case"]>;
