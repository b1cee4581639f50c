// The esbuild entry: wukongimjssdk 1.0.4's lib/ is ES modules with extensionless imports, which
// Node 20 cannot load directly (SPEC §6), so the test bundles this file.
export * from 'wukongimjssdk/lib/sdk.js';
export { ConnectStatus } from 'wukongimjssdk/lib/connect_manager.js';
