#!/usr/bin/env node
// Usage: node kad.mjs <server multiaddr with /p2p/> [--servers N] [--timeout-ms N]
//
// js-libp2p's kad-dht (@libp2p/kad-dht) bootstrapping from one Kademlia
// server over /ws, the job of a bootstrap node:
//
//  1. N server-mode js nodes listen on loopback /ws and dial the server.
//     Each waits until the server is in its routing table (js adds a peer
//     when identify lists /ipfs/kad/1.0.0 and the peer answers). Then the
//     script prints {"phase":"joined","servers":[{id,addr}...]} and waits
//     for a line on stdin, a key in hex: the caller checks its own table
//     meanwhile and picks the key.
//  2. A client-mode js node that knows only the server runs
//     getClosestPeers for that key and for its own ID, and findPeer for
//     every js server: everything it learns beyond the server it learns
//     from the server's answers. (js follows only closer peers that are
//     closer to the key than the peer that named them, so a key far from
//     the server makes the server's answer decide the whole result.)
//
// Every address is loopback, so the DHTs keep private addresses
// (passthroughMapper) and the gater allows dialing them.
//
// Prints one JSON summary line last on stdout; exit 0 if ok, 1 otherwise.
import { createInterface } from 'node:readline'
import { rerunWithWebSocket } from './rerun.mjs'

rerunWithWebSocket()

const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { identify } = await import('@libp2p/identify')
const { kadDHT, passthroughMapper } = await import('@libp2p/kad-dht')
const { ping } = await import('@libp2p/ping')
const { webSockets } = await import('@libp2p/websockets')
const { multiaddr } = await import('@multiformats/multiaddr')
const { createLibp2p } = await import('libp2p')

function parseArgs (argv) {
  const o = { servers: 6, timeoutMs: 60000 }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--servers') o.servers = Number(argv[++i])
    else if (a === '--timeout-ms') o.timeoutMs = Number(argv[++i])
    else if (a.startsWith('/')) o.target = a
    else throw new Error(`unknown argument ${a}`)
  }
  if (!o.target) throw new Error('usage: node kad.mjs <server multiaddr with /p2p/> [--servers N]')
  return o
}

const log = (msg) => process.stderr.write(`kad.mjs: ${msg}\n`)

function newNode (clientMode) {
  return createLibp2p({
    addresses: { listen: clientMode ? [] : ['/ip4/127.0.0.1/tcp/0/ws'] },
    transports: [webSockets()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: {
      identify: identify(),
      ping: ping(),
      dht: kadDHT({ clientMode, peerInfoMapper: passthroughMapper })
    },
    connectionGater: { denyDialMultiaddr: () => false },
    // Every node is on 127.0.0.1: js-libp2p's per-host inbound rate limit
    // (5 connections a second by default) would refuse the nodes' own
    // dials to each other, which a network of distinct hosts never sees.
    connectionManager: { inboundConnectionThreshold: 1000 }
  })
}

async function waitFor (what, signal, cond) {
  while (!(await cond())) {
    if (signal.aborted) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

// finalPeers drains a query and returns its FINAL_PEER events' peers.
async function finalPeers (events) {
  const out = []
  for await (const e of events) {
    if (e.name === 'FINAL_PEER') out.push({ id: e.peer.id.toString(), addrs: e.peer.multiaddrs.map(String) })
    else if (e.name === 'QUERY_ERROR') log(`query error from ${e.from}: ${e.error}`)
    else if (e.name === 'PEER_RESPONSE') log(`${e.from} answered with ${e.closer.length} closer peers`)
  }
  return out
}

async function run (o, signal) {
  const target = multiaddr(o.target)
  const nodes = []
  let serverId
  try {
    for (let i = 0; i < o.servers; i++) {
      const n = await newNode(false)
      nodes.push(n)
      serverId = (await n.dial(target, { signal })).remotePeer
    }
    await waitFor('the server in every js routing table', signal, async () => {
      for (const n of nodes) {
        if (await n.services.dht.routingTable.find(serverId) == null) return false
      }
      return true
    })
    const servers = nodes.map((n) => ({ id: n.peerId.toString(), addr: n.getMultiaddrs()[0].toString() }))
    log(`${servers.length} js servers joined; the server is in each routing table`)
    console.log(JSON.stringify({ phase: 'joined', servers }))
    const rl = createInterface({ input: process.stdin })
    const line = await new Promise((resolve, reject) => {
      rl.once('line', resolve)
      rl.once('close', () => reject(new Error('stdin closed before the go-ahead')))
      signal.addEventListener('abort', () => reject(new Error('timed out waiting for the go-ahead')))
    })
    rl.close()

    const client = await newNode(true)
    nodes.push(client)
    await client.dial(target, { signal })
    await waitFor('the server in the client routing table', signal, async () =>
      (await client.services.dht.routingTable.find(serverId)) != null)
    const key = Uint8Array.from(Buffer.from(line.trim(), 'hex'))
    const closestKey = await finalPeers(client.services.dht.getClosestPeers(key, { signal }))
    const closestSelf = await finalPeers(client.services.dht.getClosestPeers(client.peerId.toMultihash().bytes, { signal }))
    const found = []
    for (const n of nodes.slice(0, o.servers)) {
      const peers = await finalPeers(client.services.dht.findPeer(n.peerId, { signal }))
      found.push({ id: n.peerId.toString(), peers })
    }
    log(`getClosestPeers: ${closestKey.length} and ${closestSelf.length} peers; findPeer for ${found.length} servers`)
    return {
      ok: true,
      serverId: serverId.toString(),
      servers,
      client: client.peerId.toString(),
      closestKey: closestKey,
      closestSelf,
      found
    }
  } finally {
    await Promise.all(nodes.map((n) => n.stop().catch(() => {})))
  }
}

let summary
try {
  const o = parseArgs(process.argv.slice(2))
  summary = await run(o, AbortSignal.timeout(o.timeoutMs))
} catch (err) {
  summary = { ok: false, error: String(err?.stack ?? err) }
}
console.log(JSON.stringify(summary))
process.exit(summary.ok ? 0 : 1)
