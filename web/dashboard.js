// Tessera dashboard: polls /api/stats and /api/rooms every second (admin credential from
// `?token=`, kept in memory and removed from the address bar), keeps the last five minutes
// and draws them with uPlot. Rates and percentiles are computed here from successive
// counter snapshots, so each point covers the last interval only.
'use strict';
const params = new URLSearchParams(location.search);
const token = params.get('token') || '';
if (token) {
  const clean = new URL(location.href);
  clean.searchParams.delete('token');
  history.replaceState(null, '', clean);
}
const $ = (id) => document.getElementById(id);
const WINDOW_S = 300;
const POLL_MS = 1000;

// Columns: time (s), then one array per series.
const data = { t: [], rooms: [], participants: [], kbpsIn: [], kbpsOut: [], videoP99: [], audioP99: [], cpu: [] };
let last = null;

function opts(el, series, yLabel) {
  return {
    width: Math.max(300, el.clientWidth - 10), height: 220,
    scales: { x: { time: true } },
    axes: [{}, { label: yLabel, size: 60 }],
    series: [{}, ...series.map(([label, stroke]) => ({ label, stroke, width: 2, points: { show: false } }))],
  };
}

const charts = {
  load: new uPlot(opts($('c-load'), [['rooms', '#7a4dd8'], ['participants', '#1f77b4']], 'count'), [[], [], []], $('c-load')),
  bitrate: new uPlot(opts($('c-bitrate'), [['in', '#2ca02c'], ['out', '#d62728']], 'kbit/s'), [[], [], []], $('c-bitrate')),
  lateness: new uPlot(opts($('c-lateness'), [['video', '#ff7f0e'], ['audio', '#17becf']], 'ms'), [[], [], []], $('c-lateness')),
  cpu: new uPlot(opts($('c-cpu'), [['cpu', '#8c564b']], '%'), [[], []], $('c-cpu')),
};

/// The upper edge (ms) below which 99 % of the ticks between two cumulative snapshots fell.
function p99(edges, prev, cur) {
  const total = cur[cur.length - 1] - prev[prev.length - 1];
  if (total <= 0) return null;
  const want = Math.ceil(total * 0.99);
  for (let i = 0; i < edges.length; i++) if (cur[i] - prev[i] >= want) return edges[i];
  return edges[edges.length - 1];
}

async function get(path) {
  const r = await fetch(path, { headers: token ? { Authorization: `Bearer ${token}` } : {}, cache: 'no-store' });
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return r.json();
}

function push(s) {
  if (last) {
    const dt = (s.atMs - last.atMs) / 1000;
    if (dt <= 0) return;
    const p = s.participants;
    data.t.push(s.atMs / 1000);
    data.rooms.push(s.rooms);
    data.participants.push(p.web + p.whip + p.sip);
    // Counters belong to running rooms: a room that ends takes its bytes with it.
    data.kbpsIn.push(Math.max(0, (s.bytesIn - last.bytesIn) * 8 / dt / 1000));
    data.kbpsOut.push(Math.max(0, (s.bytesOut - last.bytesOut) * 8 / dt / 1000));
    data.videoP99.push(p99(s.latency.edgesMs, last.latency.video, s.latency.video));
    data.audioP99.push(p99(s.latency.edgesMs, last.latency.audio, s.latency.audio));
    data.cpu.push(Math.max(0, (s.cpuSeconds - last.cpuSeconds) / dt * 100));
    while (data.t.length && data.t[0] < s.atMs / 1000 - WINDOW_S) for (const k in data) data[k].shift();
    charts.load.setData([data.t, data.rooms, data.participants]);
    charts.bitrate.setData([data.t, data.kbpsIn, data.kbpsOut]);
    charts.lateness.setData([data.t, data.videoP99, data.audioP99]);
    charts.cpu.setData([data.t, data.cpu]);
    const n = data.t.length - 1;
    $('t-in').textContent = data.kbpsIn[n].toFixed(0);
    $('t-out').textContent = data.kbpsOut[n].toFixed(0);
    $('t-cpu').textContent = data.cpu[n].toFixed(0);
  }
  $('t-rooms').textContent = s.rooms;
  $('t-participants').textContent = s.participants.web + s.participants.whip + s.participants.sip;
  $('t-encoders').textContent = s.videoEncoders;
  $('t-rss').textContent = (s.rssBytes / 1e6).toFixed(0);
  last = s;
}

function renderRooms(rooms) {
  const body = $('rooms').querySelector('tbody');
  body.replaceChildren();
  for (const r of rooms) {
    for (const p of r.participants) {
      const link = r.links.find((l) => l.participantId === p.id) || {};
      const cells = [r.room, p.name, p.kind, p.audioCodec, link.rung ?? '–', link.estimateKbps ?? '–',
        link.lossPercent != null ? `${link.lossPercent.toFixed(1)} %` : '–',
        [p.audioMuted && 'audio', p.videoMuted && 'video'].filter(Boolean).join(', ') || '–'];
      const tr = document.createElement('tr');
      cells.forEach((c, i) => {
        const td = document.createElement('td');
        td.textContent = String(c);
        if (i === 1 && r.activeSpeaker === p.id) td.className = 'talking';
        tr.appendChild(td);
      });
      body.appendChild(tr);
    }
  }
}

async function poll() {
  try {
    const [s, rooms] = await Promise.all([get('/api/stats'), get('/api/rooms')]);
    push(s);
    renderRooms(rooms);
    $('status').textContent = `updated ${new Date(s.atMs).toLocaleTimeString()}`;
    $('status').className = '';
  } catch (e) {
    $('status').textContent = String(e.message || e);
    $('status').className = 'error';
  }
}

window.addEventListener('resize', () => {
  for (const [id, c] of Object.entries({ 'c-load': charts.load, 'c-bitrate': charts.bitrate, 'c-lateness': charts.lateness, 'c-cpu': charts.cpu })) {
    c.setSize({ width: Math.max(300, $(id).clientWidth - 10), height: 220 });
  }
});
// For tests and curious operators: what the charts hold.
window.tesseraDashboard = { data, charts };
poll();
setInterval(poll, POLL_MS);
