// The Flotilla dashboard: trades the one-time code of its URL's fragment for a session held in memory, then polls
// the admin API with it and redraws what changed. Read-only.
const POLL_MS = 2000;
const MINUTES = 10;
const SVG = 'http://www.w3.org/2000/svg';

const $ = (id) => document.getElementById(id);
const last = { overview: '', series: '', events: '' };
let eventSeq;
let events = [];
let logSubject;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'text') node.textContent = value;
    else if (key === 'onclick') node.addEventListener('click', value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

function emptyRow(columns, text) {
  return el('tr', {}, el('td', { colspan: columns, class: 'empty', text }));
}

/** Changes the text only when it differs, so that a live region announces changes, not every poll. */
function setText(id, text) {
  if ($(id).textContent !== text) $(id).textContent = text;
}

const ENDED = 'the dashboard session has ended: run `flotilla dashboard` for a new URL';
let session;

/** The session for the code in the URL's fragment, which is removed from the address bar and history first. */
async function openSession() {
  const code = new URLSearchParams(location.hash.slice(1)).get('code');
  history.replaceState(null, '', location.pathname);
  if (code === null) throw new Error('no code: open the URL that `flotilla dashboard` prints');
  const res = await fetch('/api/dashboard/sessions', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ code }),
    credentials: 'omit',
    cache: 'no-store',
  });
  const body = await res.json();
  if (!res.ok) throw new Error(body?.error?.message ?? `the code was refused (${res.status})`);
  session = body.session;
}

/** A read of the admin API with the session, never with cookies. */
function get(path) {
  return fetch(path, { headers: { authorization: `Bearer ${session}` }, credentials: 'omit', cache: 'no-store' });
}

async function getJson(path) {
  const res = await get(path);
  if (res.status === 401) throw new Error(ENDED);
  const body = await res.json();
  if (!res.ok) throw new Error(body?.error?.message ?? `${path} answered ${res.status}`);
  return body;
}

function round(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(value)) return '–';
  return value >= 100 ? String(Math.round(value)) : value.toFixed(digits);
}

function pairs(record) {
  const entries = Object.entries(record);
  return entries.length === 0 ? '–' : entries.map(([key, value]) => `${key} ${value}`).join(', ');
}

function since(iso) {
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 90) return `${seconds} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

/** A small line chart: one polyline per line, gaps where a value is null; `headline` is the number shown beside the title. */
function chart(label, unit, points, lines, headline) {
  const width = 240;
  const height = 56;
  const values = lines.flatMap((line) => points.map(line.value)).filter((v) => v !== null);
  const max = Math.max(1e-9, ...values);
  const top = max * 1.15;
  const box = svg('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none', role: 'img' });
  box.setAttribute(
    'aria-label',
    `${label} over the last ${MINUTES} minutes: ${headline.text} ${unit} ${headline.what}, peak ${round(max)} ${unit}`,
  );
  const step = points.length > 1 ? (width - 2) / (points.length - 1) : width;
  const y = (value) => (height - 2 - (value / top) * (height - 4)).toFixed(1);
  for (const line of lines) {
    let segment = [];
    const flush = () => {
      if (segment.length === 1) {
        const [x, value] = segment[0];
        segment = [
          [x - step, value],
          [x, value],
        ];
      }
      if (segment.length > 0)
        box.append(svg('polyline', { points: segment.map(([x, v]) => `${x.toFixed(1)},${y(v)}`).join(' '), class: line.key }));
      segment = [];
    };
    points.forEach((point, i) => {
      const value = line.value(point);
      if (value === null) flush();
      else segment.push([i * step, value]);
    });
    flush();
  }
  const title = el(
    'div',
    { class: 'chart-title' },
    el('span', { text: `${label} (${unit})` }),
    el('span', { class: 'now', title: headline.what, text: headline.text }),
  );
  const parts = [title, box];
  if (lines.length > 1)
    parts.push(
      el(
        'div',
        { class: 'legend', 'aria-hidden': 'true' },
        ...lines.flatMap((line) => [el('span', { class: line.key, text: `■ ${line.key}` }), ' ']),
      ),
    );
  return el('div', { class: 'chart-box' }, ...parts);
}

function chartCard(kind, name, points, stepSeconds) {
  const recent = points.slice(-Math.round(60 / stepSeconds));
  const requests = recent.reduce((sum, p) => sum + p.requests, 0);
  const errors = recent.reduce((sum, p) => sum + p.errors, 0);
  const latest = [...points].reverse().find((p) => p.requests > 0);
  const lastMinute = 'over the last minute';
  const card = el('figure', { class: 'chart-card', 'data-kind': kind, 'data-name': name });
  card.append(
    el('figcaption', { text: `${kind} ${name}` }),
    el(
      'div',
      { class: 'chart-row' },
      chart('Requests', '/s', points, [{ key: 'rate', value: (p) => p.requests / stepSeconds }], {
        text: round(requests / 60),
        what: lastMinute,
      }),
      chart('Errors', '%', points, [{ key: 'errors', value: (p) => (p.requests === 0 ? 0 : (100 * p.errors) / p.requests) }], {
        text: requests === 0 ? '–' : round((100 * errors) / requests),
        what: lastMinute,
      }),
      chart(
        'Latency',
        'ms',
        points,
        ['p50', 'p95', 'p99'].map((key) => ({ key, value: (p) => p[key] ?? null })),
        {
          text: latest === undefined ? '–' : `${round(latest.p50)} / ${round(latest.p95)} / ${round(latest.p99)}`,
          what: 'p50 / p95 / p99 of the latest step with requests',
        },
      ),
    ),
  );
  return card;
}

function renderSeries(series) {
  const cards = [
    ...Object.entries(series.endpoints).map(([name, points]) => chartCard('endpoint', name, points, series.stepSeconds)),
    ...Object.entries(series.backends).map(([name, points]) => chartCard('backend', name, points, series.stepSeconds)),
  ];
  $('charts').replaceChildren(
    ...(cards.length > 0 ? cards : [el('p', { class: 'empty', text: 'No requests through the front door yet.' })]),
  );
}

function renderEndpoints(endpoints) {
  const rows = Object.entries(endpoints).map(([name, e]) =>
    el(
      'tr',
      { 'data-endpoint': name },
      el('th', { scope: 'row', text: name }),
      el('td', { text: e.route ?? '(handles only)' }),
      el('td', { text: e.methods.join(', ') }),
      el('td', { text: pairs(e.traffic) }),
      el('td', { text: pairs(e.shadows) }),
    ),
  );
  $('endpoint-rows').replaceChildren(...(rows.length > 0 ? rows : [emptyRow(5, 'No endpoints.')]));
  const shadowRows = Object.entries(endpoints).flatMap(([name, e]) =>
    Object.entries(e.shadowStats).map(([backend, s]) =>
      el(
        'tr',
        {},
        el('th', { scope: 'row', text: name }),
        el('td', { text: backend }),
        el('td', { class: 'num', text: `${s.sent} (${s.dropped} dropped, ${s.failed} failed)` }),
        el('td', { class: 'num', text: s.compared === 0 ? '–' : `${round((100 * s.matches) / s.compared)} % of ${s.compared}` }),
        el('td', { class: 'num', text: `${s.statusMismatches} / ${s.bodyMismatches}` }),
        el('td', { class: 'num', text: `${round(s.primaryLatencyMs.p50)} / ${round(s.shadowLatencyMs.p50)} ms` }),
        el('td', { class: 'num', text: `${round(s.primaryLatencyMs.p99)} / ${round(s.shadowLatencyMs.p99)} ms` }),
      ),
    ),
  );
  $('shadow-rows').replaceChildren(...(shadowRows.length > 0 ? shadowRows : [emptyRow(7, 'No shadows set.')]));
}

function definitionText(d) {
  return d.kind === 'import' ? `${d.module}:${d.exportName}` : `${d.kind} ${d.name} (source ${d.sourceHash.slice(0, 12)})`;
}

function renderBackends(backends) {
  const articles = Object.entries(backends).map(([name, b]) => {
    const config = [
      ['Serves', definitionText(b.definition)],
      ['Runtime', b.runtimeEnv.image ?? b.runtimeEnv.runtime ?? 'node'],
      ['Replicas', `${b.replicas.filter((r) => r.state === 'ready').length} ready of ${b.numReplicas}`],
      ['Max concurrent', b.maxConcurrentQueries],
      ['Batch', b.maxBatchSize],
      ['Queue', b.maxQueuedRequests],
      ['Timeout', b.requestTimeoutS === null ? 'none' : `${b.requestTimeoutS} s`],
      ['User config', JSON.stringify(b.userConfig)],
      ['Per replica', `${b.resources.numCpus} CPU, ${b.resources.memoryMb ?? 'no limit'} MB, ${b.resources.numGpus} GPU`],
    ];
    const rows = b.replicas.map((r) =>
      el(
        'tr',
        { 'data-replica': r.id },
        el('th', { scope: 'row', text: r.id }),
        el('td', {}, el('span', { class: `state state-${r.state}`, text: r.state })),
        el('td', { text: since(r.startedAt), title: r.startedAt }),
        el('td', { class: 'num', text: r.restarts }),
        el('td', { class: r.lastError ? 'error' : 'empty', text: r.lastError ?? 'none' }),
        el('td', { class: 'num', text: r.placement.cpus }),
        el('td', { class: 'num', text: r.placement.memoryMb === null ? 'no limit' : `${r.placement.memoryMb} MB` }),
        el('td', { text: r.placement.gpuIds.length === 0 ? 'none' : `${r.placement.gpuIds.join(', ')} (${r.placement.gpuShare} each)` }),
        el(
          'td',
          {},
          el('button', {
            type: 'button',
            text: 'Show log',
            'aria-label': `Show log of replica ${r.id}`,
            onclick: () => showLog(name, r.id),
          }),
        ),
      ),
    );
    const head = el(
      'tr',
      {},
      ...['Replica', 'State', 'Started', 'Restarts', 'Last error', 'CPUs', 'Memory', 'GPUs', 'Log'].map((text) =>
        el('th', { scope: 'col', text }),
      ),
    );
    return el(
      'article',
      { class: 'backend', 'data-backend': name, 'aria-labelledby': `backend-${name}` },
      el('h3', { id: `backend-${name}`, text: name }),
      el('dl', { class: 'config' }, ...config.map(([term, value]) => el('div', {}, el('dt', { text: term }), el('dd', { text: value })))),
      el(
        'table',
        {},
        el('caption', { class: 'visually-hidden', text: `Replicas of ${name}` }),
        el('thead', {}, head),
        el('tbody', {}, ...(rows.length > 0 ? rows : [emptyRow(9, 'No replicas.')])),
      ),
    );
  });
  $('backend-list').replaceChildren(...(articles.length > 0 ? articles : [el('p', { class: 'empty', text: 'No backends.' })]));
}

function renderEvents() {
  const rows = [...events].reverse().map((e) =>
    el(
      'tr',
      { 'data-kind': e.kind },
      el('td', { text: new Date(e.time).toLocaleTimeString(), title: e.time }),
      el('td', { text: e.kind }),
      el('td', {
        text:
          ['endpoint', 'backend', 'replica']
            .filter((k) => e[k] !== undefined)
            .map((k) => `${k} ${e[k]}`)
            .join(', ') || '–',
      }),
      el('td', { text: e.message }),
    ),
  );
  $('event-rows').replaceChildren(...(rows.length > 0 ? rows : [emptyRow(4, 'No events yet.')]));
}

async function showLog(backend, replica) {
  logSubject = replica;
  $('log-subject').textContent = `Last lines of replica ${replica} of ${backend}:`;
  let text;
  try {
    const res = await get(`/api/backends/${encodeURIComponent(backend)}/logs?tail=100`);
    const body = await res.text();
    const lines = body.split('\n').flatMap((line) => {
      const match = /^(?:(\S+) )?\[([^\]]+)\] (.*)$/.exec(line);
      return match?.[2] === replica ? [match[1] === undefined ? match[3] : `${match[1]} ${match[3]}`] : [];
    });
    text = res.ok ? lines.join('\n') || '(the log is empty)' : `(no log: the admin API answered ${res.status})`;
  } catch (error) {
    text = `(no log: ${error.message})`;
  }
  if (logSubject !== replica) return;
  $('log-text').textContent = text;
  $('log').scrollIntoView({ block: 'nearest' });
}

async function poll() {
  try {
    if (session === undefined) await openSession();
    const query = eventSeq === undefined ? 'limit=50' : `since=${eventSeq}&limit=1000`;
    const [overview, series, page] = await Promise.all([
      getJson('/api/overview'),
      getJson(`/api/series?minutes=${MINUTES}`),
      getJson(`/api/events?${query}`),
    ]);
    $('instance').textContent = `instance ${overview.instance}`;
    const overviewText = JSON.stringify(overview);
    if (overviewText !== last.overview) {
      last.overview = overviewText;
      renderEndpoints(overview.endpoints);
      renderBackends(overview.backends);
    }
    const seriesText = JSON.stringify(series);
    if (seriesText !== last.series) {
      last.series = seriesText;
      renderSeries(series);
    }
    if (eventSeq === undefined || page.events.length > 0) {
      events = [...events, ...page.events].slice(-50);
      renderEvents();
    }
    eventSeq = page.events.at(-1)?.seq ?? eventSeq ?? page.latest;
    setText('status', 'Live.');
    $('updated').textContent = `Updated ${new Date().toLocaleTimeString()}; front door at ${overview.httpUrl}`;
  } catch (error) {
    setText('status', `Not updated: ${error.message}`);
    if (session === undefined || error.message === ENDED) return;
  }
  setTimeout(poll, POLL_MS);
}

// A new code pasted into this tab's address bar changes only the fragment: start over with it.
addEventListener('hashchange', () => location.reload());
poll();
