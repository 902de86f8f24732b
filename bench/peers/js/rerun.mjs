// Node only (the browser bundles import polyfill.mjs alone).
import { spawnSync } from 'node:child_process'
import { needsWebSocketFlag } from './polyfill.mjs'

// rerunWithWebSocket runs this script again with the global WebSocket
// enabled (stdio inherited) and exits with its status, when this Node
// needs the flag; otherwise it returns. Call it before importing libp2p.
export function rerunWithWebSocket () {
  if (!needsWebSocketFlag) return
  const r = spawnSync(process.execPath, ['--experimental-websocket', '--no-warnings=ExperimentalWarning', ...process.argv.slice(1)], { stdio: 'inherit' })
  process.exit(r.status ?? 1)
}
