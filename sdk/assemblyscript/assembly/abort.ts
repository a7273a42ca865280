// AssemblyScript's `abort` (failed assertions, out-of-bounds accesses, out of memory) would
// import `env.abort`, which proxy-wasm hosts do not provide. The build replaces it with this
// (`--use abort=proxyAbort`, see asconfig.json; `@global` makes the name the same wherever
// the SDK is installed): log the reason, then trap, so the host
// applies the plugin's failure policy.

import * as abi from "./imports";
import { LogLevel } from "./types";

// @ts-ignore: decorator
@global
export function proxyAbort(message: string | null, fileName: string | null, line: u32, column: u32): void {
  let text = "abort: " + (message === null ? "(no message)" : message);
  if (fileName !== null) text += " at " + fileName + ":" + line.toString() + ":" + column.toString();
  const bytes = String.UTF8.encode(text);
  abi.proxy_log(<u32>LogLevel.Critical, changetype<usize>(bytes), bytes.byteLength);
  unreachable();
}
