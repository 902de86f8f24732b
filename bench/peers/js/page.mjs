// Browser entry point, bundled by build.mjs into dist/page.js and loaded by
// index.html. Parameters come from the query string (target, hold,
// monitorMs, pings, streams, bytes); the summary is left in
// window.__summary for browser.mjs to collect.
import './polyfill.mjs'
import { runClient } from './lib.mjs'

const q = new URLSearchParams(location.search)
const num = (k) => (q.has(k) ? Number(q.get(k)) : undefined)
const opts = {
  target: q.get('target'),
  holdSeconds: num('hold'),
  monitorIntervalMs: num('monitorMs'),
  pings: num('pings'),
  echoStreams: num('streams'),
  echoBytes: num('bytes'),
  log: (m) => console.log(`page: ${m}`)
}
for (const k of Object.keys(opts)) if (opts[k] === undefined) delete opts[k]

const out = document.getElementById('out')
try {
  if (!opts.target) throw new Error('missing ?target=<multiaddr>')
  const summary = await runClient(opts)
  window.__summary = { ...summary, runtime: navigator.userAgent }
} catch (err) {
  console.error(`page: error: ${err?.stack ?? err}`)
  window.__summary = { target: opts.target, ok: false, error: String(err?.message ?? err) }
}
out.textContent = JSON.stringify(window.__summary, null, 2)
