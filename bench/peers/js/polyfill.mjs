// Polyfills that let js-libp2p 3.x (written for Node >= 22) run on Node 20.
// Import this before any libp2p module: ES module evaluation follows import
// order, so the globals exist before libp2p's modules run.

if (typeof Promise.withResolvers !== 'function') {
  // ES2024; used by libp2p's streams, yamux and ping. Node 22 has it.
  Promise.withResolvers = function withResolvers () {
    let resolve, reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

// @libp2p/websockets dials with the global WebSocket. Node 20 has it only
// behind --experimental-websocket (the same undici implementation Node 22
// enables by default); the Node scripts re-execute themselves with that
// flag (rerun.mjs).
export const needsWebSocketFlag = typeof globalThis.WebSocket !== 'function'
