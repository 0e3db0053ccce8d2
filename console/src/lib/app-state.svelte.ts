import type { GetSetupStateResponse } from "@redflag/gen/auth_service_pb";

// What the server said about itself on load: whether setup is needed, the signing key agents
// pin, single sign-on. Shared by the setup and sign-in pages and the layout.
class AppState {
  setup: GetSetupStateResponse | undefined = $state();
}
export const appState = new AppState();
