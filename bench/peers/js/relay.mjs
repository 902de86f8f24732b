#!/usr/bin/env node
// Usage: node [--experimental-websocket] relay.mjs <relay multiaddr with /p2p/> [options]
//
// Two js-libp2p nodes use a circuit relay v2 (@libp2p/circuit-relay-v2):
// the target listens on <relay>/p2p-circuit, so js reserves a slot on the
// relay; the dialer reaches it through <relay>/p2p-circuit/p2p/<target>
// (Noise and yamux over the circuit) and echoes bytes on /echo/1.0.0.
//
//   --bytes N        bytes echoed (default 32768: js endpoints count both
//                    directions against the relay's 128 KiB data limit)
//   --timeout-ms N   overall limit (default 60000)
//
// Prints one JSON line on stdout; exit 0 if ok, 1 otherwise.
import { rerunWithWebSocket } from './rerun.mjs'

rerunWithWebSocket()

const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { circuitRelayTransport } = await import('@libp2p/circuit-relay-v2')
const { identify } = await import('@libp2p/identify')
const { webSockets } = await import('@libp2p/websockets')
const { multiaddr } = await import('@multiformats/multiaddr')
const { createLibp2p } = await import('libp2p')

const ECHO = '/echo/1.0.0'

function parseArgs (argv) {
  const o = { bytes: 32 << 10, timeoutMs: 60000 }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--bytes') o.bytes = Number(argv[++i])
    else if (a === '--timeout-ms') o.timeoutMs = Number(argv[++i])
    else if (a.startsWith('/')) o.relay = a
    else throw new Error(`unknown argument ${a}`)
  }
  if (!o.relay) throw new Error('usage: node relay.mjs <relay multiaddr> [--bytes N]')
  return o
}

const log = (msg) => process.stderr.write(`relay.mjs: ${msg}\n`)

function newNode (listen) {
  return createLibp2p({
    addresses: { listen },
    transports: [webSockets(), circuitRelayTransport()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify() },
    // Every address here is a loopback /ws listener.
    connectionGater: { denyDialMultiaddr: () => false }
  })
}

async function run (o) {
  const target = await newNode([`${o.relay}/p2p-circuit`])
  const dialer = await newNode([])
  try {
    await target.handle(ECHO, async (stream) => {
      for await (const chunk of stream) {
        const buf = chunk instanceof Uint8Array ? chunk : chunk.subarray()
        if (!stream.send(buf)) await stream.onDrain()
      }
      await stream.close()
    }, { runOnLimitedConnection: true })

    // The reservation: the target announces <relay>/p2p-circuit/p2p/<target>.
    let circuitAddr
    const deadline = Date.now() + o.timeoutMs
    while (!circuitAddr) {
      circuitAddr = target.getMultiaddrs().map(String).find((a) => a.includes('/p2p-circuit'))
      if (Date.now() > deadline) throw new Error('no reservation: the target never announced a circuit address')
      if (!circuitAddr) await new Promise((resolve) => setTimeout(resolve, 20))
    }
    log(`target ${target.peerId} reachable at ${circuitAddr}`)

    const conn = await dialer.dial(multiaddr(`${o.relay}/p2p-circuit/p2p/${target.peerId}`))
    log(`dialed through the relay: ${conn.remoteAddr}, limits ${JSON.stringify(conn.limits, (k, v) => typeof v === 'bigint' ? Number(v) : v)}`)
    const stream = await conn.newStream(ECHO, { runOnLimitedConnection: true })
    const sent = new Uint8Array(o.bytes)
    crypto.getRandomValues(sent.subarray(0, Math.min(sent.length, 65536)))
    for (let i = 65536; i < sent.length; i++) sent[i] = (i * 131) & 0xff
    const writer = (async () => {
      for (let off = 0; off < sent.length; off += 16384) {
        if (!stream.send(sent.subarray(off, off + 16384))) await stream.onDrain()
      }
      await stream.close()
    })()
    let got = 0
    for await (const chunk of stream) {
      const buf = chunk instanceof Uint8Array ? chunk : chunk.subarray()
      for (let i = 0; i < buf.length; i++) {
        if (buf[i] !== sent[got + i]) throw new Error(`byte ${got + i} differs`)
      }
      got += buf.length
    }
    await writer
    if (got !== sent.length) throw new Error(`EOF after ${got} of ${sent.length} bytes`)
    return {
      ok: true,
      circuitAddr,
      remoteAddr: String(conn.remoteAddr),
      limited: conn.limits != null,
      limitSeconds: conn.limits?.seconds ?? 0,
      limitBytes: Number(conn.limits?.bytes ?? 0),
      echoBytes: got
    }
  } finally {
    await Promise.all([dialer.stop(), target.stop()])
  }
}

let out
try {
  const o = parseArgs(process.argv.slice(2))
  const timer = setTimeout(() => {
    process.stdout.write(JSON.stringify({ ok: false, error: `timeout after ${o.timeoutMs} ms` }) + '\n')
    process.exit(1)
  }, o.timeoutMs)
  out = await run(o)
  clearTimeout(timer)
} catch (err) {
  out = { ok: false, error: String(err?.stack ?? err) }
}
process.stdout.write(JSON.stringify(out) + '\n')
process.exit(out.ok ? 0 : 1)
