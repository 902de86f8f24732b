#!/usr/bin/env node
// Usage: node [--experimental-websocket] client.mjs <multiaddr> [options]
//
//   <multiaddr>        target, e.g. /ip4/127.0.0.1/tcp/4001/ws/p2p/12D3Koo…
//                      (or env TARGET). With /p2p/ the Noise handshake checks
//                      the peer ID; without it any peer ID is accepted.
//   --hold N           keep the connection open N seconds at the end and fail
//                      if it closes (env HOLD_SECONDS, default 0)
//   --monitor-ms N     connection-monitor ping interval during the hold
//                      (env MONITOR_MS, default 10000)
//   --pings N          pings to send (default 10)
//   --streams N        concurrent /echo/1.0.0 streams (default 4)
//   --bytes N          bytes per echo stream (default 1048576)
//   --timeout-ms N     overall limit (default 120000 + hold)
//   -q                 no progress lines on stderr (identify result, RTTs, …)
//
// Prints one JSON line on stdout; exit 0 if ok, 1 otherwise.
import { rerunWithWebSocket } from './rerun.mjs'

rerunWithWebSocket()
const { DEFAULTS, runClient } = await import('./lib.mjs')

function parseArgs (argv) {
  const o = {
    target: process.env.TARGET,
    holdSeconds: num(process.env.HOLD_SECONDS, DEFAULTS.holdSeconds),
    monitorIntervalMs: num(process.env.MONITOR_MS, DEFAULTS.monitorIntervalMs)
  }
  const flags = {
    '--hold': 'holdSeconds',
    '--monitor-ms': 'monitorIntervalMs',
    '--pings': 'pings',
    '--streams': 'echoStreams',
    '--bytes': 'echoBytes',
    '--timeout-ms': 'timeoutMs'
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '-q') {
      o.quiet = true
    } else if (a === '-v') {
      o.quiet = false // the default; accepted for symmetry with -q
    } else if (a in flags) {
      o[flags[a]] = num(argv[++i], NaN)
      if (!Number.isFinite(o[flags[a]])) throw new Error(`${a} needs a number`)
    } else if (a.startsWith('/')) {
      o.target = a
    } else {
      throw new Error(`unknown argument ${a}`)
    }
  }
  if (!o.target) throw new Error('usage: node client.mjs <multiaddr> [--hold N] [--pings N] [--streams N] [--bytes N] [-q]')
  return o
}

function num (s, dflt) {
  return s === undefined || s === '' ? dflt : Number(s)
}

let target
try {
  const o = parseArgs(process.argv.slice(2))
  target = o.target
  if (!o.quiet) o.log = (m) => process.stderr.write(`client: ${m}\n`)
  const timeoutMs = o.timeoutMs ?? 120000 + 1000 * o.holdSeconds
  const summary = await Promise.race([
    runClient(o),
    new Promise((resolve, reject) => setTimeout(() => reject(new Error(`no result within ${timeoutMs} ms`)), timeoutMs).unref())
  ])
  console.log(JSON.stringify({ ...summary, runtime: `node ${process.version}` }))
  process.exit(0)
} catch (err) {
  process.stderr.write(`client: error: ${err?.stack ?? err?.message ?? err}\n`)
  console.log(JSON.stringify({ target, ok: false, error: String(err?.message ?? err) }))
  process.exit(1)
}
