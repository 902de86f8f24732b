// Browser entry point for relay-browser.mjs, bundled by build.mjs into
// relay-page.js and loaded by relay.html: a js-libp2p node that cannot
// listen (it is in a browser) becomes reachable through a circuit relay v2.
//
// It listens on <relay>/p2p-circuit, so @libp2p/circuit-relay-v2 dials the
// relay and reserves a slot; then it serves /echo/1.0.0 on the relayed
// connections others open to it. Query string:
//
//   relay        the relay's multiaddr with /p2p/<relay id>
//   streams      echo streams to serve (default 1); the page finishes once
//                they are served and the dialer closed their connections
//   timeoutMs    limit for the whole page (default 60000)
//
// window.__ready is set once the reservation is held (the driver reads it
// and tells whoever dials); window.__summary when the page is done.
import './polyfill.mjs'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { identify } from '@libp2p/identify'
import { webSockets } from '@libp2p/websockets'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'

const ECHO = '/echo/1.0.0'

const q = new URLSearchParams(location.search)
const o = {
  relay: q.get('relay'),
  streams: Number(q.get('streams') ?? 1),
  timeoutMs: Number(q.get('timeoutMs') ?? 60000)
}
const log = (m) => console.log(`relay-page: ${m}`)

// limits copies a connection's remaining limits (live getters in js:
// seconds left, bytes left counting both directions), or null for none.
function limits (conn) {
  const l = conn.limits
  if (l == null) return null
  return { seconds: l.seconds ?? null, bytes: l.bytes == null ? null : Number(l.bytes) }
}

// reservationOf reads the reservation the circuit transport holds on the
// relay. js keeps the Reservation message of the RESERVE reply (expire,
// addrs, voucher) but not its Limit, and exposes it only on the transport
// (the pinned @libp2p/circuit-relay-v2 4.2.13: transport.reservationStore).
function reservationOf (node, relayId) {
  const transport = node.components.transportManager.getTransports()
    .find((t) => t[Symbol.toStringTag] === '@libp2p/circuit-relay-v2-transport')
  const r = transport?.reservationStore?.getReservation(relayId)
  if (r == null) return null
  return {
    expire: Number(r.expire),
    addrs: r.addrs.map((b) => multiaddr(b).toString()),
    voucher: r.voucher != null
  }
}

async function run () {
  if (!o.relay) throw new Error('missing ?relay=<multiaddr with /p2p/>')
  const relayId = multiaddr(o.relay).getComponents().findLast((c) => c.name === 'p2p')?.value
  if (!relayId) throw new Error(`relay address ${o.relay} has no /p2p/ part`)

  // Each relayed connection's limits as it opened (after Noise and the
  // muxer, before identify or any stream), and the echo streams served.
  const opened = new Map()
  const served = []
  let done
  const finished = new Promise((resolve) => { done = resolve })
  // Finished once the echo streams are served and their connections
  // closed: the dialer hangs up when it has read the echo back (stopping
  // the node earlier could cut off the echo's tail).
  const check = () => {
    if (served.length >= o.streams && served.every((s) => node.getConnections().every((c) => c.id !== s.connId))) done()
  }
  const node = await createLibp2p({
    addresses: { listen: [`${o.relay}/p2p-circuit`] },
    transports: [webSockets(), circuitRelayTransport()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify() },
    // js-libp2p's browser gater refuses private and loopback addresses;
    // the relay here is a loopback /tls/ws listener.
    connectionGater: { denyDialMultiaddr: () => false }
  })
  try {
    node.addEventListener('connection:open', (evt) => {
      if (evt.detail.remoteAddr.toString().includes('/p2p-circuit')) opened.set(evt.detail.id, limits(evt.detail))
    })
    node.addEventListener('connection:close', check)
    await node.handle(ECHO, async (stream, conn) => {
      const s = {
        connId: conn.id,
        remotePeer: conn.remotePeer.toString(),
        remoteAddr: conn.remoteAddr.toString(),
        direction: conn.direction,
        encryption: conn.encryption,
        multiplexer: conn.multiplexer,
        bytes: 0,
        limitsAtOpen: opened.get(conn.id) ?? null
      }
      try {
        for await (const chunk of stream) {
          const buf = chunk instanceof Uint8Array ? chunk : chunk.subarray()
          s.bytes += buf.byteLength
          if (!stream.send(buf)) await stream.onDrain()
        }
        await stream.close()
        s.limitsAfterEcho = limits(conn)
        log(`echoed ${s.bytes} bytes to ${conn.remotePeer} over ${conn.remoteAddr}`)
      } catch (err) {
        s.error = String(err?.message ?? err)
      }
      served.push(s)
      check()
    }, { runOnLimitedConnection: true })

    // The listener returned once the reservation was made; the circuit
    // address is announced when the address manager hears of it.
    let circuitAddr
    while (!(circuitAddr = node.getMultiaddrs().map(String).find((a) => a.includes('/p2p-circuit')))) {
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    const relayConns = node.getConnections().filter((c) => c.remotePeer.toString() === relayId)
    if (relayConns.length !== 1) throw new Error(`${relayConns.length} connections to the relay`)
    const relayConn = relayConns[0]
    window.__ready = {
      peerId: node.peerId.toString(),
      circuitAddr,
      relayConn: {
        remoteAddr: relayConn.remoteAddr.toString(),
        encryption: relayConn.encryption,
        multiplexer: relayConn.multiplexer,
        limits: limits(relayConn)
      },
      reservation: reservationOf(node, relayConn.remotePeer)
    }
    log(`reachable at ${circuitAddr}`)

    await finished
    const errors = served.filter((s) => s.error)
    return {
      ok: errors.length === 0,
      error: errors.map((s) => s.error).join('; ') || undefined,
      ...window.__ready,
      served,
      runtime: navigator.userAgent
    }
  } finally {
    await node.stop()
  }
}

const out = document.getElementById('out')
const timeout = new Promise((resolve, reject) => setTimeout(() => reject(new Error(`timeout after ${o.timeoutMs} ms`)), o.timeoutMs))
try {
  window.__summary = await Promise.race([run(), timeout])
} catch (err) {
  console.error(`relay-page: error: ${err?.stack ?? err}`)
  window.__summary = { ok: false, error: String(err?.message ?? err), ready: window.__ready }
}
out.textContent = JSON.stringify(window.__summary, null, 2)
