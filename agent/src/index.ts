// The agent as a library, for tests and embedding: the CLI in main.ts is a thin layer over this.
export { loadConfig, defaultConfig, type Config } from "./config.ts";
export { runAgent, defaultTiming, type RunOptions, type RunSummary, type Timing } from "./loop.ts";
export { registerAgent, type RegisterOptions, type RegisterOutcome } from "./register.ts";
export { readStatus, type AgentStatusReport } from "./status.ts";
export { AgentError, EXIT_FAILURE, EXIT_OK, EXIT_USAGE } from "./errors.ts";
export { computeMachineId, machineIdOfThisHost } from "./state/identity.ts";
export { pae, COMMAND_TYPE, RENEW_PAYLOAD_TYPE } from "@redflag/common/signing/envelope";
export { keyIdOf } from "@redflag/common/signing/key-ids";
export { main } from "./main.ts";
