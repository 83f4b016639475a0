// The server as it runs in production, seen by a browser: HTTPS (a self-signed certificate;
// `--ignore-certificate-errors` here only), access control on, tokens made by
// `tessera token`. Two Chromium pages join with their invitation links; a third without a
// token is refused. The web client is checked as a user sees it at 1280x800 (the lobby
// hides in the call, the composite fills the visible stage, the self-view covers no part
// of it, a quality indicator shows figures), then the admin dashboard must load with an
// admin token and draw non-empty series while the room runs. Screenshots of the lobby, the
// call and the dashboard are kept in target/e2e-artifacts/.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, statSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, listeningUrl, waiter } from './common.mjs';

const BIN = process.env.TESSERA_BIN || new URL('../../target/release/tessera', import.meta.url).pathname;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ART = new URL('../../target/e2e-artifacts/', import.meta.url).pathname;
const SECRET = 'e2e-secret-e2e-secret-e2e-secret-0123';
const ADMIN_KEY = 'e2e-admin-key-e2e-admin-key';
const VIEWPORT = { width: 1280, height: 800 };
const deadline = Date.now() + 150_000;
const log = (...a) => console.log(`[secure ${new Date().toISOString().slice(11, 23)}]`, ...a);
function fail(msg) { throw new Error(msg); }

const waitFor = waiter(deadline);

// `tessera token …`: the token is the last line of its output.
function token(...args) {
  const r = spawnSync(BIN, ['token', ...args], { env: { ...process.env, TESSERA_API_SECRET: SECRET }, encoding: 'utf8' });
  if (r.status !== 0) fail(`tessera token ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.trim().split('\n').pop();
}

// Whether two boxes overlap (with a pixel of tolerance).
const overlap = (a, b) => a.x + a.width > b.x + 1 && b.x + b.width > a.x + 1 && a.y + a.height > b.y + 1 && b.y + b.height > a.y + 1;

async function main() {
  mkdirSync(ART, { recursive: true });
  const proc = spawn(BIN, ['--listen', '127.0.0.1:0', '--sip-listen', 'off', '--tls-self-signed',
    '--video-size', '640x360', '--video-bitrate-kbps', '600'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, TESSERA_API_SECRET: SECRET, TESSERA_ADMIN_KEY: ADMIN_KEY, RUST_LOG: process.env.RUST_LOG || 'info,webrtc=warn,rtc=warn' },
  });
  proc.stderr.on('data', (d) => process.stderr.write(`[server] ${d}`));
  const url = await listeningUrl(proc);
  if (!url.startsWith('https://')) fail(`expected an https listener, got ${url}`);
  log('server at', url);
  const browser = await chromium.launch({
    executablePath: CHROMIUM, headless: true,
    args: [...CHROMIUM_ARGS, '--allow-loopback-in-peer-connection', '--ignore-certificate-errors'],
  });
  try {
    const room = 'secure';
    const links = { Ada: token('--room', room, '--name', 'Ada', '--moderator'), Bob: token('--room', room, '--name', 'Bob') };
    const pages = {};
    for (const name of ['Ada', 'Bob']) {
      const ctx = await browser.newContext({ permissions: ['camera', 'microphone'], viewport: VIEWPORT, ignoreHTTPSErrors: true });
      const page = await ctx.newPage();
      page.on('pageerror', (e) => log(`${name} page error:`, e.message));
      // The page must reach `load` (it did not before: a test of what users wait for).
      const t0 = Date.now();
      await page.goto(`${url}/?room=${room}&name=${name}&token=${links[name]}`, { waitUntil: 'load', timeout: 15_000 });
      log(`${name}: page loaded in ${Date.now() - t0} ms`);
      if ((await page.evaluate(() => location.protocol)) !== 'https:') fail('not served over HTTPS');
      if ((await page.evaluate(() => location.search)).includes('token=')) fail('the token stayed in the address bar');
      if (!(await page.isVisible('#lobby')) || (await page.isVisible('#call'))) fail(`${name}: lobby should show, call should not`);
      if (name === 'Ada') await page.screenshot({ path: `${ART}lobby.png` });
      await page.click('#join');
      pages[name] = page;
    }
    for (const [name, page] of Object.entries(pages)) {
      await waitFor(`${name} to decode the composite`, async () => {
        const s = await page.evaluate(async () => ({ ...(await window.tessera.receiveStats()), error: document.getElementById('error').hidden ? null : document.getElementById('error').textContent }));
        if (s.error) fail(`${name} shows an error: ${s.error}`);
        return { ok: s.video && s.video.framesDecoded > 30 && s.audio && s.audio.totalAudioEnergy > 0, ...s };
      });
    }
    // A page without a token is told it needs an invitation.
    const anon = await (await browser.newContext({ permissions: ['camera', 'microphone'], viewport: VIEWPORT, ignoreHTTPSErrors: true })).newPage();
    await anon.goto(`${url}/?room=${room}&name=Eve&autojoin=1`, { waitUntil: 'load' });
    await waitFor('the anonymous page to show its refusal', async () => {
      const e = await anon.evaluate(() => (document.getElementById('error').hidden ? '' : document.getElementById('error').textContent));
      return { ok: /invitation/.test(e), e };
    }, 15_000);

    // The web client as a user sees it, in the call.
    const ada = pages.Ada;
    await waitFor('the quality indicator to show figures', async () => {
      const q = await ada.evaluate(() => ({ text: document.getElementById('quality').textContent, cls: document.getElementById('quality').className }));
      return { ok: /kbit\/s/.test(q.text) && /(good|fair|poor)/.test(q.cls), ...q };
    }, 15_000);
    const layout = await ada.evaluate(() => {
      const box = (id) => { const r = document.getElementById(id).getBoundingClientRect(); return { x: r.x, y: r.y, width: r.width, height: r.height }; };
      const v = document.getElementById('remote');
      // The picture inside the element (object-fit: contain letterboxes it).
      const r = v.getBoundingClientRect();
      const scale = Math.min(r.width / v.videoWidth, r.height / v.videoHeight);
      const pic = { x: r.x + (r.width - v.videoWidth * scale) / 2, y: r.y + (r.height - v.videoHeight * scale) / 2, width: v.videoWidth * scale, height: v.videoHeight * scale };
      return { remote: box('remote'), pic, self: box('self'), quality: document.getElementById('quality').textContent, scrollHeight: document.documentElement.scrollHeight };
    });
    log('layout', JSON.stringify(layout));
    if (await ada.isVisible('#lobby')) fail('the join form is still on screen during the call');
    const { pic, self } = layout;
    if (pic.y < 0 || pic.y + pic.height > VIEWPORT.height + 0.5 || pic.x < 0 || pic.x + pic.width > VIEWPORT.width + 0.5) fail(`the composite is not fully visible: ${JSON.stringify(pic)}`);
    if (pic.width < 0.6 * VIEWPORT.width) fail(`the composite does not fill the stage: ${pic.width} px wide of ${VIEWPORT.width}`);
    if (overlap(pic, self)) fail(`the self-view covers the composite: ${JSON.stringify({ pic, self })}`);
    if (layout.scrollHeight > VIEWPORT.height + 1) fail(`the call page scrolls (${layout.scrollHeight} px): something is below the fold`);
    await ada.screenshot({ path: `${ART}call.png` });

    // The dashboard: refused without a token, draws with one.
    const refused = await (await browser.newContext({ ignoreHTTPSErrors: true })).request.get(`${url}/dashboard`);
    if (refused.status() !== 401) fail(`/dashboard without a token: ${refused.status()}`);
    const dash = await (await browser.newContext({ viewport: VIEWPORT, ignoreHTTPSErrors: true })).newPage();
    dash.on('pageerror', (e) => log('dashboard page error:', e.message));
    await dash.goto(`${url}/dashboard?token=${token('--admin', '--ttl', '10m')}`, { waitUntil: 'load', timeout: 15_000 });
    const drawn = await waitFor('the dashboard to plot the running room', async () => {
      const d = await dash.evaluate(() => {
        const { data, charts } = window.tesseraDashboard;
        const n = data.t.length;
        return {
          n, participants: data.participants[n - 1], kbpsOut: Math.max(0, ...data.kbpsOut), kbpsIn: Math.max(0, ...data.kbpsIn),
          cpu: Math.max(0, ...data.cpu), audioP99: data.audioP99.filter((x) => x != null).length,
          canvases: document.querySelectorAll('.uplot canvas').length, drawnPoints: charts.bitrate.data[0].length,
          rows: document.querySelectorAll('#rooms tbody tr').length, status: document.getElementById('status').textContent,
        };
      });
      return { ok: d.n >= 5 && d.participants === 2 && d.kbpsOut > 100 && d.kbpsIn > 100 && d.cpu > 0 && d.audioP99 > 0 && d.canvases === 4 && d.drawnPoints === d.n && d.rows === 2, ...d };
    }, 30_000);
    log('dashboard', JSON.stringify(drawn));
    await dash.screenshot({ path: `${ART}dashboard.png`, fullPage: true });
    for (const f of ['lobby.png', 'call.png', 'dashboard.png']) {
      if (statSync(`${ART}${f}`).size < 10_000) fail(`${f} is suspiciously small`);
    }
    log(`PASS: HTTPS + tokens in Chromium, refused without a token; the call fills the stage with the self-view beside it; the dashboard plots the room. Screenshots: ${ART}{lobby,call,dashboard}.png`);
  } finally {
    await browser.close().catch(() => {});
    proc.kill('SIGTERM');
    await new Promise((r) => { proc.on('exit', r); setTimeout(r, 5000); });
  }
}

main().catch((e) => { console.error('FAIL:', e.message); process.exit(1); });
