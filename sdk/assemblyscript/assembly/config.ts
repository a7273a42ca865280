// Configuration errors worded as the Rust SDK words them, so every wasmesh filter reports a
// bad field the same way: "configuration field `request.x-a`: expected a string".

import { logError } from "./host";

/** The message for a mistake at dotted field `path` (`.` or empty: the whole document). */
export function configError(path: string, message: string): string {
  if (path.length == 0 || path == ".") return "configuration: " + message;
  return "configuration field `" + path + "`: " + message;
}

/**
 * Logs the mistake at error level and answers false, for `onConfigure` to return: the host
 * then refuses the plugin (wasmesh rejects the configuration that named it).
 */
export function refuseConfiguration(path: string, message: string): bool {
  logError(configError(path, message));
  return false;
}
