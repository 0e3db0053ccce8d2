// The entry of the single-file agent (scripts/build-agent.ts bundles from here): the same CLI as
// bin/redflag-agent.js. A single-executable application runs one CommonJS script, so there is no
// top-level await; its argv[1] is the executable again, like a script's path.
import { runCli } from "./main.ts";

runCli();
