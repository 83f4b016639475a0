// Cluster end-to-end test: a real redis-server and two tessera nodes on loopback. Ada opens
// node n1's page and joins room `c` (placed on n1); Bob opens node n2's page and joins `c`:
// n2 answers `redirect`, and the web client must follow it to n1 by itself (a WebSocket to
// another origin, allowed because it is a live node of the cluster). Both must then decode
// the composite and hear audio, in one room on n1. Run inside a loopback-only network
// namespace (scripts/test.sh).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, listeningUrl, waiter } from './common.mjs';

const BIN = process.env.TESSERA_BIN || new URL('../../target/release/tessera', import.meta.url).pathname;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const deadline = Date.now() + 120_000;
const log = (...a) => console.log(`[cluster ${new Date().toISOString().slice(11, 23)}]`, ...a);
function fail(msg) { throw new Error(msg); }
const waitFor = waiter(deadline);
const procs = [];
const dirs = [];

function freePort() {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

async function startRedis() {
  const port = await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  procs.push(proc);
  return `redis://127.0.0.1:${port}`;
}

async function startNode(redis, id) {
  const dir = mkdtempSync(join(tmpdir(), `tessera-cluster-${id}-`));
  dirs.push(dir);
  const cfg = join(dir, 'tessera.toml');
  writeFileSync(cfg, `[recording]\ndir = "${dir}"\n`);
  const proc = spawn(BIN, ['--listen', '127.0.0.1:0', '--sip-listen', 'off', '--video-size', '640x360',
    '--redis', redis, '--node-id', id, '--config', cfg], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info,webrtc=warn,rtc=warn' },
  });
  procs.push(proc);
  proc.stderr.on('data', (d) => process.stderr.write(`[${id}] ${d}`));
  return listeningUrl(proc);
}

const api = async (base, path) => (await fetch(`${base}${path}`)).json();

async function main() {
  const redis = await startRedis();
  const n1 = await startNode(redis, 'n1');
  const n2 = await startNode(redis, 'n2');
  log('nodes at', n1, n2);
  await waitFor('both nodes to see each other', async () => {
    const [a, b] = await Promise.all([api(n1, '/api/cluster'), api(n2, '/api/cluster')]);
    return { ok: a.nodes.length === 2 && b.nodes.length === 2 && a.placing && b.placing, a, b };
  }, 20_000);
  const browser = await chromium.launch({
    executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_ARGS, '--allow-loopback-in-peer-connection'],
  });
  try {
    const pages = [];
    for (const [name, base] of [['Ada', n1], ['Bob', n2]]) {
      const ctx = await browser.newContext({ permissions: ['camera', 'microphone'] });
      const page = await ctx.newPage();
      page.on('pageerror', (e) => log(`${name} page error:`, e.message));
      await page.goto(`${base}/?room=c&name=${name}&autojoin=1`);
      pages.push({ name, page });
      // Ada's join places the room before Bob asks.
      if (name === 'Ada') await waitFor('Ada to join', async () => ({ ok: await page.evaluate(() => window.tessera.me !== null) }), 20_000);
    }
    for (const p of pages) {
      const s = await waitFor(`${p.name} to decode composite video and hear audio`, async () => {
        const st = await p.page.evaluate(async () => ({
          ...(await window.tessera.receiveStats()), hops: window.tessera.hops, ws: window.tessera.ws && window.tessera.ws.url,
          error: document.getElementById('error').hidden ? null : document.getElementById('error').textContent,
        }));
        if (st.error) fail(`${p.name} shows an error: ${st.error}`);
        return { ok: st.video && st.video.framesDecoded > 20 && st.audio && st.audio.totalAudioEnergy > 0, ...st };
      });
      log(p.name, JSON.stringify({ hops: s.hops, ws: s.ws, frames: s.video.framesDecoded }));
      const wantWs = `${n1.replace('http://', 'ws://')}/ws`;
      if (s.ws !== wantWs) fail(`${p.name}'s signaling went to ${s.ws}, not the room's node ${wantWs}`);
      if (s.hops !== (p.name === 'Bob' ? 1 : 0)) fail(`${p.name} followed ${s.hops} redirects`);
    }
    // n2's list includes n1's rooms (published every 2 s).
    await waitFor('n2 to list room c on n1 with both', async () => {
      const c = (await api(n2, '/api/rooms')).find((r) => r.room === 'c');
      return { ok: !!c && c.node === 'n1' && c.participants.length === 2, c };
    }, 10_000);
    log('PASS: both pages in room c on n1; Bob followed the redirect from n2');
  } finally {
    await browser.close();
  }
}

function cleanUp() {
  procs.forEach((p) => p.kill('SIGKILL'));
  dirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
}

main()
  .then(() => { cleanUp(); process.exit(0); })
  .catch((e) => { console.error(e); cleanUp(); process.exit(1); });
