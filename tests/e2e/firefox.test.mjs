// Firefox end-to-end test: two headless Chromium pages (playwright-core) and one headless
// Firefox ESR page (puppeteer-core over WebDriver BiDi) join one room through the server's
// own web page. Firefox runs offline, so it has no OpenH264 plugin: it offers VP8, VP9 and
// AV1 and no H.264, and must be sent VP8. Every page's camera is a canvas of one colour and
// its microphone an oscillator of one tone; every page must see the other two colours where
// the grid puts them and not its own, and hear the other two tones and not its own. Firefox
// must decode at least 20 fps of VP8 (its getStats()), list its devices, mute (the others
// stop hearing it) and change the layout from its page. Never downloads a browser. Run inside
// a loopback-only network namespace (scripts/test.sh), as root: Firefox gathers no ICE
// candidate on loopback (media.peerconnection.ice.loopback notwithstanding) nor on any
// interface without a default route, so the test gives its namespace a veth pair with a
// private address and a default route, and the server binds media there (--media-ip).
import { execFileSync, spawn } from 'node:child_process';
import { chromium } from 'playwright-core';
import puppeteer from 'puppeteer-core';
import { CHROMIUM_ARGS, fakeMedia, listeningUrl, waiter } from './common.mjs';

const BIN = process.env.TESSERA_BIN || new URL('../../target/release/tessera', import.meta.url).pathname;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const FIREFOX = process.env.FIREFOX || '/usr/bin/firefox-esr';
const [WIDTH, HEIGHT] = [640, 360];
const deadline = Date.now() + 170_000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.log(`[firefox ${new Date().toISOString().slice(11, 23)}]`, ...a);
function fail(msg) { throw new Error(msg); }
const waitFor = waiter(deadline);

// Join order is tile order (the grid leaves the viewer out and keeps join order).
const PEOPLE = [
  { name: 'Ada', browser: 'chromium', rgb: [220, 30, 30], tone: 500 },
  { name: 'Bob', browser: 'chromium', rgb: [30, 30, 220], tone: 800 },
  { name: 'Fox', browser: 'firefox', rgb: [30, 190, 30], tone: 1300 },
];
const NO_TONE = 1900;

// Page side: what the page receives — stats, the codec of each direction, the colour at
// each grid tile's centre and the share of each colour, and the level of each tone (dB, from
// an AnalyserNode; or with `record`, where no AudioContext runs, from 1.5 s of the received
// audio recorded, decoded offline and measured with the Goertzel filter).
async function observe({ colours, tones, record }) {
  const t = window.tessera;
  const out = { mic: window.__micContext && window.__micContext.state, stats: await t.receiveStats(), error: document.getElementById('error').hidden ? null : document.getElementById('error').textContent };
  const rs = await t.pc.getStats();
  rs.forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video' && r.codecId) out.recvCodec = rs.get(r.codecId)?.mimeType;
    if (r.type === 'outbound-rtp' && r.kind === 'video' && r.codecId) out.sendCodec = rs.get(r.codecId)?.mimeType;
  });
  const v = document.getElementById('remote');
  if (v.videoWidth) {
    const c = document.createElement('canvas');
    c.width = 160; c.height = 90;
    const g = c.getContext('2d');
    g.drawImage(v, 0, 0, c.width, c.height);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    const near = (i, rgb) => Math.abs(d[i] - rgb[0]) < 40 && Math.abs(d[i + 1] - rgb[1]) < 40 && Math.abs(d[i + 2] - rgb[2]) < 40;
    out.share = colours.map((rgb) => { let n = 0; for (let i = 0; i < d.length; i += 4) if (near(i, rgb)) n++; return n / (d.length / 4); });
    // Two tiles side by side: the centres of the left and right halves.
    out.tiles = [[40, 45], [120, 45]].map(([x, y]) => { const i = (y * c.width + x) * 4; return colours.findIndex((rgb) => near(i, rgb)); });
    out.size = [v.videoWidth, v.videoHeight];
  }
  if (record && v.srcObject && v.srcObject.getAudioTracks().length) {
    const rec = new MediaRecorder(new MediaStream(v.srcObject.getAudioTracks()));
    const chunks = [];
    rec.ondataavailable = (e) => chunks.push(e.data);
    rec.start();
    await new Promise((r) => setTimeout(r, 1500));
    await new Promise((r) => { rec.onstop = r; rec.stop(); });
    const audio = await new OfflineAudioContext(1, 48000, 48000).decodeAudioData(await new Blob(chunks).arrayBuffer());
    const x = audio.getChannelData(0).slice(-audio.sampleRate);
    out.db = tones.map((f) => {
      const c = 2 * Math.cos(2 * Math.PI * f / audio.sampleRate);
      let s1 = 0, s2 = 0;
      for (let i = 0; i < x.length; i++) { const s0 = x[i] + c * s1 - s2; s2 = s1; s1 = s0; }
      return 10 * Math.log10((s1 * s1 + s2 * s2 - c * s1 * s2) / x.length + 1e-12);
    });
    return out;
  }
  if (!window.__an && v.srcObject && v.srcObject.getAudioTracks().length) {
    const ac = new AudioContext();
    await Promise.race([ac.resume().catch(() => {}), new Promise((r) => setTimeout(r, 1000))]);
    const an = ac.createAnalyser(); an.fftSize = 8192; an.smoothingTimeConstant = 0;
    ac.createMediaStreamSource(v.srcObject).connect(an);
    window.__an = { ac, an };
  }
  if (window.__an) {
    const { ac, an } = window.__an;
    const bins = new Float32Array(an.frequencyBinCount);
    const acc = tones.map(() => 0);
    for (let r = 0; r < 8; r++) {
      an.getFloatFrequencyData(bins);
      tones.forEach((f, i) => { const b = Math.round(f / (ac.sampleRate / an.fftSize)); acc[i] += Math.max(...bins.slice(b - 2, b + 3)); });
      await new Promise((res) => setTimeout(res, 100));
    }
    out.db = acc.map((x) => x / 8);
  }
  return out;
}

// A "LAN" inside this namespace: tfx0 (10.203.0.1/24) with its veth peer, and a default
// route through it (nothing answers there: the namespace stays cut off).
const MEDIA_IP = '10.203.0.1';
function makeLan() {
  const ip = (...a) => execFileSync('ip', a, { stdio: ['ignore', 'ignore', 'pipe'] });
  try {
    ip('link', 'add', 'tfx0', 'type', 'veth', 'peer', 'name', 'tfx1');
    ip('addr', 'add', `${MEDIA_IP}/24`, 'dev', 'tfx0');
    ip('link', 'set', 'tfx0', 'up');
    ip('link', 'set', 'tfx1', 'up');
    ip('route', 'add', 'default', 'via', '10.203.0.2', 'dev', 'tfx0');
  } catch (e) {
    fail(`cannot give the namespace a veth pair (run as root inside unshare -n, as scripts/test.sh does): ${e.stderr || e.message}`);
  }
}

async function main() {
  makeLan();
  const proc = spawn(BIN, ['--listen', '127.0.0.1:0', '--media-ip', MEDIA_IP, '--video-size', `${WIDTH}x${HEIGHT}`, '--video-bitrate-kbps', '600'], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info,webrtc=warn,rtc=warn' },
  });
  proc.stderr.on('data', (d) => process.stderr.write(`[server] ${d}`));
  const url = await listeningUrl(proc);
  log('server at', url);
  const chrome = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_ARGS, '--allow-loopback-in-peer-connection'] });
  const firefox = await puppeteer.launch({
    browser: 'firefox', executablePath: FIREFOX, headless: true,
    // As large as the Chromium pages' (playwright's 1280x720): the web client asks for the
    // size its video element shows, and puppeteer's default 800x600 makes that a lower rung
    // on some Firefox versions (ESR 140 asked for 320x180).
    defaultViewport: { width: 1280, height: 800 },
    extraPrefsFirefox: {
      'media.navigator.streams.fake': true, 'media.navigator.permission.disabled': true,
      'media.peerconnection.ice.loopback': true, 'media.peerconnection.ice.obfuscate_host_addresses': false,
      'media.autoplay.default': 0, 'media.autoplay.block-webaudio': false,
      // No sound device in CI: without cubeb's mock backend an AudioContext never runs
      // (the oscillator microphone would be silent and nothing could be analysed).
      'media.cubeb.force_mock_context': true,
      // Firefox's microphone is its fake device, at Fox's tone.
      'media.navigator.audio.fake_frequency': PEOPLE.find((p) => p.browser === 'firefox').tone,
    },
  });
  log('browsers:', chrome.version(), '/', await firefox.version());
  const colours = PEOPLE.map((p) => p.rgb);
  const tones = [...PEOPLE.map((p) => p.tone), NO_TONE];
  const pages = [];
  const look = (p) => p.page.evaluate(observe, { colours, tones, record: p.browser === 'firefox' });
  try {
    for (const p of PEOPLE) {
      const joinUrl = `${url}/?room=fx&name=${p.name}&autojoin=1`;
      let page;
      if (p.browser === 'chromium') {
        page = await (await chrome.newContext({ permissions: ['camera', 'microphone'] })).newPage();
      } else {
        page = await firefox.newPage();
      }
      // The same script source for both drivers.
      const init = `(${fakeMedia})(${JSON.stringify(p.rgb)}, ${p.tone}, ${p.browser === 'firefox'});`;
      if (p.browser === 'chromium') await page.addInitScript({ content: init });
      else await page.evaluateOnNewDocument(init);
      page.on('pageerror', (e) => log(`${p.name} page error:`, e.message));
      await page.goto(joinUrl);
      pages.push({ ...p, page });
    }

    for (const [k, p] of pages.entries()) {
      const o = await waitFor(`${p.name} (${p.browser}) to see both others and hear them`, async () => {
        const s = await look(p);
        if (s.error) fail(`${p.name} shows an error: ${s.error}`);
        const others = [0, 1, 2].filter((i) => i !== k);
        const ok = s.stats.video && s.stats.video.framesDecoded > 30 && s.tiles
          && s.tiles[0] === others[0] && s.tiles[1] === others[1] && s.db
          && others.every((i) => s.db[i] > s.db[3] + 20);
        return { ok, ...s };
      }, 90_000);
      log(p.name, JSON.stringify({ recv: o.recvCodec, send: o.sendCodec, size: o.size, tiles: o.tiles, share: o.share.map((x) => x.toFixed(3)), db: o.db.map((x) => x.toFixed(1)) }));
      const others = [0, 1, 2].filter((i) => i !== k);
      if (o.size[0] !== WIDTH || o.size[1] !== HEIGHT) fail(`${p.name}: composite ${o.size}`);
      if (!(o.share[k] < 0.005)) fail(`${p.name} sees its own colour: ${o.share}`);
      if (!others.every((i) => o.share[i] > 0.2)) fail(`${p.name}: the others' colours cover too little: ${o.share}`);
      if (!(o.db[k] < Math.min(...others.map((i) => o.db[i])) - 20)) fail(`${p.name} hears its own tone: ${o.db}`);
      const want = p.browser === 'firefox' ? 'video/VP8' : 'video/H264';
      if (o.recvCodec !== want) fail(`${p.name} is sent ${o.recvCodec}, expected ${want}`);
      if (p.browser === 'firefox' && o.sendCodec !== 'video/VP8') fail(`Firefox sends ${o.sendCodec}, expected VP8`);
    }
    // Firefox's decode rate over 5 s.
    const fox = pages[2];
    const a = await look(fox);
    const t0 = Date.now();
    await sleep(5000);
    const b = await look(fox);
    const fps = (b.stats.video.framesDecoded - a.stats.video.framesDecoded) / ((Date.now() - t0) / 1000);
    log(`Firefox decodes ${fps.toFixed(1)} fps of VP8; freezes ${b.stats.video.freezeCount}, keyframes ${b.stats.video.keyFramesDecoded}`);
    if (!(fps >= 20)) fail(`Firefox decodes only ${fps.toFixed(1)} fps`);
    // The connection-quality line works in Firefox.
    const quality = await fox.page.evaluate(() => document.getElementById('quality').textContent);
    log('Firefox quality line:', quality);
    if (!/kbit\/s/.test(quality) || /no video/.test(quality)) fail(`Firefox quality line: ${quality}`);
    // Devices: Firefox lists its cameras and microphones in the in-call pickers.
    const devices = await fox.page.evaluate(() => ['camera-in-call', 'mic-in-call'].map((id) => document.getElementById(id).options.length));
    log('Firefox device pickers (camera, microphone options):', devices.join(', '));
    if (!(devices[0] >= 1 && devices[1] >= 1)) fail(`Firefox lists no devices: ${devices}`);
    // Mute from Firefox's page: the others stop hearing its tone; unmute brings it back.
    // Firefox's tone at Ada, in dB against Bob's.
    const foxTone = (o) => o.db[2] - o.db[1];
    const base = foxTone(await look(pages[0]));
    await fox.page.click('#mute-mic');
    const muted = await waitFor('Ada to stop hearing Firefox', async () => {
      const o = await look(pages[0]);
      return { ok: o.db && foxTone(o) < base - 20, db: o.db };
    }, 10_000);
    const listed = (await (await fetch(`${url}/api/rooms`)).json()).find((r) => r.room === 'fx').participants.find((p) => p.name === 'Fox');
    if (!listed.audioMuted) fail(`Firefox's mute is not shown: ${JSON.stringify(listed)}`);
    await fox.page.click('#mute-mic');
    const unmuted = await waitFor('Ada to hear Firefox again', async () => {
      const o = await look(pages[0]);
      return { ok: o.db && foxTone(o) > base - 6, db: o.db };
    }, 10_000);
    log(`Firefox at Ada against Bob: ${base.toFixed(1)} dB; muted ${foxTone(muted).toFixed(1)} dB; unmuted ${foxTone(unmuted).toFixed(1)} dB`);
    // Layout from Firefox's page: the room switches, Firefox keeps decoding.
    await fox.page.select('#layout', 'speaker');
    await waitFor('the room to take the layout Firefox chose', async () => {
      const r = (await (await fetch(`${url}/api/rooms`)).json()).find((x) => x.room === 'fx');
      return { ok: r.layout === 'speaker', layout: r.layout };
    }, 10_000);
    // Firefox re-creates its receive stream's statistics when its own sender is
    // reconfigured (the room's `sendLimit` for its camera changes with the layout, a
    // smaller size a second after it), so inbound-rtp's `framesDecoded` may start again:
    // a 2 s window in which it went backwards is measured again (three tries).
    const frames = () => fox.page.evaluate(async () => (await window.tessera.receiveStats()).video.framesDecoded);
    let after = -1;
    for (let i = 0; i < 3 && after < 0; i++) {
      const [c0, l0] = [await frames(), Date.now()];
      await sleep(2000);
      const [c1, l1] = [await frames(), Date.now()];
      after = c1 >= c0 ? (c1 - c0) / ((l1 - l0) / 1000) : -1;
      if (after < 0) log(`Firefox's inbound-rtp statistics started again (${c0} -> ${c1} frames): measuring again`);
    }
    log(`layout speaker chosen in Firefox; Firefox decodes ${after.toFixed(1)} fps after the switch`);
    if (!(after >= 20)) fail(`Firefox slowed to ${after.toFixed(1)} fps after the layout change`);
    const room = (await (await fetch(`${url}/api/rooms`)).json()).find((r) => r.room === 'fx');
    log('room', JSON.stringify({ participants: room.participants.length, videoEncoders: room.videoEncoders }));
    if (room.participants.length !== 3) fail(`expected 3 participants: ${JSON.stringify(room)}`);
    log('PASS: Firefox (VP8 both ways) and two Chromium pages see and hear the others and not themselves; Firefox lists devices, mutes and changes the layout');
  } catch (e) {
    const r = await fetch(`${url}/api/rooms`).then((x) => x.json()).catch(() => []);
    log('links at failure:', JSON.stringify((r.find((x) => x.room === 'fx') || {}).links));
    // What every page saw, for the failure report.
    for (const p of pages) {
      const o = await look(p).catch((x) => ({ error: x.message }));
      if (!o.recvCodec) log(`${p.name}'s offer:`, await p.page.evaluate(() => window.tessera.pc.localDescription.sdp).catch(() => null));
      log(`${p.name} at failure:`, JSON.stringify({ mic: o.mic, recv: o.recvCodec, send: o.sendCodec, tiles: o.tiles, share: o.share, db: o.db, video: o.stats && o.stats.video, audio: o.stats && o.stats.audio }));
    }
    throw e;
  } finally {
    await firefox.close().catch(() => {});
    await chrome.close().catch(() => {});
    proc.kill('SIGTERM');
  }
}

main().then(() => process.exit(0), (e) => { console.error('FAIL:', e.message); process.exit(1); });
