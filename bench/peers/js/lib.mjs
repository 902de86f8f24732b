// Shared js-libp2p interop client, used by client.mjs (Node) and page.mjs
// (bundled for Chromium). It only relies on the standard libp2p protocols
// (WebSocket, Noise, yamux, identify, ping) plus /echo/1.0.0, so it can be
// pointed at any server that speaks them: go-libp2p's libp2p-host or
// swarmgate's `loadgen serve`.
//
// Import polyfill.mjs before this module on runtimes older than Node 22.

import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { webSockets } from '@libp2p/websockets'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'

export const ECHO_PROTOCOL = '/echo/1.0.0'

export const DEFAULTS = Object.freeze({
  pings: 10,
  echoStreams: 4,
  echoBytes: 1 << 20, // per stream
  chunkBytes: 64 << 10, // size of each send(); also getRandomValues' limit
  holdSeconds: 0,
  monitorIntervalMs: 10000, // js-libp2p's default connection-monitor interval
  identifyTimeoutMs: 10000,
  pingTimeoutMs: 10000, // js-libp2p's own ping timeout
  echoTimeoutMs: 60000
})

/**
 * Dial target, check identify, ping, echo and keepalive; return the summary.
 * Throws on any failure (the caller turns it into ok:false).
 *
 * @param {object} opts - DEFAULTS fields plus `target` (multiaddr string) and
 *   optional `log(msg)`.
 */
export async function runClient (opts) {
  const o = { ...DEFAULTS, ...opts }
  const log = o.log ?? (() => {})
  const ma = multiaddr(o.target)

  const node = await createLibp2p({
    // No listen addresses: a pure dialer, like a browser peer.
    addresses: { listen: [] },
    transports: [webSockets()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: {
      identify: identify(),
      // The explicit pings and the connection monitor share js-libp2p's
      // per-connection limit on outbound ping streams (default 1), and a
      // finished ping stream still counts until the server's FIN arrives.
      // When the monitor loses that race it aborts the whole connection, so
      // allow 3 locally; the server still sees at most 2 active ping streams
      // (one explicit, one monitor), the inbound limit it may enforce.
      ping: ping({ maxOutboundStreams: 3 })
    },
    // js-libp2p's browser gater refuses /ws and private/loopback addresses;
    // every target of these scripts is a loopback /ws listener.
    connectionGater: { denyDialMultiaddr: () => false },
    connectionMonitor: { enabled: true, pingInterval: o.monitorIntervalMs }
  })

  let identifyTimer
  try {
    // Identify runs by itself on every new connection; listen before dialing
    // so the event cannot be missed.
    const identified = new Promise((resolve, reject) => {
      identifyTimer = setTimeout(() => reject(new Error(`identify: no result within ${o.identifyTimeoutMs} ms`)), o.identifyTimeoutMs)
      node.addEventListener('peer:identify', (evt) => {
        clearTimeout(identifyTimer)
        resolve(evt.detail)
      }, { once: true })
    })
    identified.catch(() => {}) // awaited below; a failed dial must not leave it unhandled

    const t0 = performance.now()
    const conn = await node.dial(ma)
    log(`connected to ${conn.remotePeer} via ${conn.remoteAddr} (muxer ${conn.multiplexer}, encryption ${conn.encryption}) in ${(performance.now() - t0).toFixed(1)} ms`)
    const monitor = countRttUpdates(conn)

    const id = await identified
    if (!id.peerId.equals(conn.remotePeer)) {
      throw new Error(`identify: result for ${id.peerId}, connected to ${conn.remotePeer}`)
    }
    log(`identify: agentVersion=${id.agentVersion} protocols=${id.protocols.join(',')}`)

    const pings = []
    for (let i = 0; i < o.pings; i++) {
      pings.push(await node.services.ping.ping(conn.remotePeer, { signal: AbortSignal.timeout(o.pingTimeoutMs) }))
    }
    log(`pings (ms): ${pings.join(' ')}`)

    const e0 = performance.now()
    const echoed = await Promise.all(
      Array.from({ length: o.echoStreams }, (_, i) => echoStream(conn, i, o))
    )
    const echoBytes = echoed.reduce((a, b) => a + b, 0)
    const echoMs = performance.now() - e0
    log(`echo: ${o.echoStreams} streams, ${echoBytes} bytes verified in ${echoMs.toFixed(1)} ms`)

    if (o.holdSeconds > 0) {
      await hold(conn, o.holdSeconds * 1000)
      log(`held the connection open ${o.holdSeconds} s; monitor pings seen: ${monitor.count()}`)
    }

    return {
      target: o.target,
      remotePeer: conn.remotePeer.toString(),
      agentVersion: id.agentVersion ?? '',
      protocolVersion: id.protocolVersion ?? '',
      protocols: id.protocols,
      pings,
      echoStreams: o.echoStreams,
      echoBytes,
      echoMs: Math.round(echoMs),
      holdSeconds: o.holdSeconds,
      monitorPings: monitor.count(),
      ok: true
    }
  } finally {
    clearTimeout(identifyTimer)
    const s0 = performance.now()
    await node.stop()
    log(`libp2p node stopped in ${(performance.now() - s0).toFixed(1)} ms`)
  }
}

// echoStream opens one /echo/1.0.0 stream, sends o.echoBytes random bytes,
// closes its write side and checks the echo byte for byte until EOF.
async function echoStream (conn, index, o) {
  const stream = await conn.newStream(ECHO_PROTOCOL)
  const sent = randomBytes(o.echoBytes)
  const signal = AbortSignal.timeout(o.echoTimeoutMs)
  const abortOnTimeout = () => stream.abort(new Error(`echo stream ${index}: timeout after ${o.echoTimeoutMs} ms`))
  signal.addEventListener('abort', abortOnTimeout, { once: true })

  const writer = (async () => {
    for (let off = 0; off < sent.length; off += o.chunkBytes) {
      if (!stream.send(sent.subarray(off, off + o.chunkBytes))) {
        await stream.onDrain({ signal })
      }
    }
    await stream.close({ signal }) // half-close: the server sees EOF
  })()

  const reader = (async () => {
    let got = 0
    for await (const chunk of stream) {
      const buf = chunk instanceof Uint8Array ? chunk : chunk.subarray()
      if (got + buf.length > sent.length) {
        throw new Error(`echo stream ${index}: got more than the ${sent.length} bytes sent`)
      }
      for (let i = 0; i < buf.length; i++) {
        if (buf[i] !== sent[got + i]) {
          throw new Error(`echo stream ${index}: byte ${got + i} differs (sent ${sent[got + i]}, got ${buf[i]})`)
        }
      }
      got += buf.length
    }
    return got
  })()

  try {
    const [, got] = await Promise.all([writer, reader])
    if (got !== sent.length) {
      throw new Error(`echo stream ${index}: EOF after ${got} of ${sent.length} bytes`)
    }
    return got
  } catch (err) {
    stream.abort(err)
    throw err
  } finally {
    signal.removeEventListener('abort', abortOnTimeout)
  }
}

// hold keeps the connection idle (apart from the connection monitor's pings
// and yamux keepalives) for ms and fails as soon as it is no longer open.
async function hold (conn, ms) {
  const end = Date.now() + ms
  while (Date.now() < end) {
    if (conn.status !== 'open') {
      throw new Error(`connection became ${conn.status} while held open`)
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(250, end - Date.now())))
  }
  if (conn.status !== 'open') {
    throw new Error(`connection became ${conn.status} while held open`)
  }
}

// countRttUpdates counts writes of conn.rtt: the connection monitor sets it
// after each successful ping (js-libp2p 3.x assigns it ad hoc; the Connection
// class does not declare it). Returns count() === -1 if the field cannot be
// observed (a different js-libp2p layout).
function countRttUpdates (conn) {
  const d = Object.getOwnPropertyDescriptor(conn, 'rtt') ??
    { value: undefined, configurable: Object.isExtensible(conn), enumerable: true }
  if (!d.configurable || !('value' in d)) {
    return { count: () => -1 }
  }
  let value = d.value
  let n = 0
  Object.defineProperty(conn, 'rtt', {
    configurable: true,
    enumerable: d.enumerable,
    get: () => value,
    set: (v) => { value = v; n++ }
  })
  return { count: () => n }
}

function randomBytes (n) {
  const b = new Uint8Array(n)
  for (let off = 0; off < n; off += 65536) {
    crypto.getRandomValues(b.subarray(off, Math.min(n, off + 65536)))
  }
  return b
}
