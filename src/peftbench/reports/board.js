// The results board of report.html (reports/board.py): draws filters, the Pareto plot, the run table and
// the side-by-side comparison from the JSON blob in #board-data. Record strings reach the page only as
// text nodes or attribute values, and Plotly (which reads its labels as HTML) gets them entity-escaped.
(function () {
  'use strict';
  const D = JSON.parse(document.getElementById('board-data').textContent);
  const AX = Object.fromEntries(D.axes.map(a => [a.key, a]));
  const FIELDS = ['task', 'model', 'method', 'status'];
  const COLS = [['id', 'run'], ['task', 'task'], ['model', 'model'], ['method', 'method'], ['config', 'config'],
    ['seed', 'seed'], ['status', 'status']].concat(D.axes.map(a => [a.key, a.label]));
  const S = {filters: {task: '', model: '', method: '', status: ''}, x: D.x, y: D.y, sort: null, asc: true,
    picked: [], rows: [], front: []};
  const PLOT = {displaylogo: false, responsive: true};
  const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22'];
  const $ = id => document.getElementById(id);

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => e.setAttribute(k, v));
    if (text !== undefined) e.textContent = text;
    return e;
  }
  const esc = s => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  const isNum = v => typeof v === 'number' && isFinite(v);
  const scale = a => (a.bytes ? 1 / 1048576 : 1);
  function fmt(key, v) {
    if (!isNum(v)) return v === null || v === undefined ? '-' : String(v);
    if (AX[key] && AX[key].bytes) return v >= 1048576 ? (v / 1048576).toFixed(1) + ' MB' : (v / 1024).toFixed(1) + ' KB';
    return Math.abs(v) >= 1000 ? Math.round(v).toLocaleString('en') : String(+v.toPrecision(4));
  }
  const cell = (r, k) => (k in AX ? r.v[k] : r[k]);

  function filtered() {
    return D.runs.filter(r => FIELDS.every(f => !S.filters[f] || r[f] === S.filters[f]));
  }
  function sorted(rows) {
    if (!S.sort) return rows;
    const key = r => { const v = cell(r, S.sort); return isNum(v) ? [0, v] : v === null || v === undefined ? [2, ''] : [1, String(v).toLowerCase()]; };
    return rows.slice().sort((a, b) => { const x = key(a), y = key(b);
      return x[0] - y[0] || (x[0] === 2 ? 0 : (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0) * (S.asc ? 1 : -1)); });
  }
  // A run is on the front when no successful run of the same task is at least as good on both axes and better on one.
  // Runs known not to have learned (no better than the majority class or the untrained model) take no place on it.
  function front(pts) {
    const sx = AX[S.x].up ? 1 : -1, sy = AX[S.y].up ? 1 : -1;
    const beats = (q, p) => sx * q.x >= sx * p.x && sy * q.y >= sy * p.y && (sx * q.x > sx * p.x || sy * q.y > sy * p.y);
    const ranked = pts.filter(p => p.r.learned !== false);
    return ranked.filter(p => !ranked.some(q => q !== p && q.task === p.task && beats(q, p)));
  }

  function drawPlot(rows) {
    const ax = AX[S.x], ay = AX[S.y];
    if (!ax || !ay) return Plotly.react($('board-plot'), [], {height: 380, title: {text: 'no run recorded a number to plot'}}, PLOT);
    const pts = rows.filter(r => r.status === 'success' && isNum(r.v[S.x]) && isNum(r.v[S.y]))
      .map(r => ({x: r.v[S.x], y: r.v[S.y], task: r.task, r: r}));
    const on = new Set(front(pts));
    const trace = (ps, name, color, symbol) => ({type: 'scatter', mode: 'markers', name: name, customdata: ps.map(p => p.r.i),
      x: ps.map(p => p.x * scale(ax)), y: ps.map(p => p.y * scale(ay)), hoverinfo: 'text+x+y',
      hovertext: ps.map(p => esc(p.r.id + ' · ' + p.r.config)),
      marker: {color: color, symbol: symbol || 'circle', size: 10, line: {color: '#000', width: ps.map(p => (S.picked.includes(p.r.i) ? 2 : 0))}}});
    const traces = [trace(pts.filter(p => !on.has(p) && p.r.learned !== false), 'dominated', '#b0b0b0'),
      trace(pts.filter(p => p.r.learned === false), 'did not learn', '#b0b0b0', 'x'),
      Object.assign(trace([...on], 'Pareto front', '#d62828'),
      {mode: 'markers+text', text: [...on].map(p => esc(p.r.config)), textposition: 'top right', textfont: {size: 11}})];
    new Set(pts.map(p => p.task)).forEach(t => {
      const f = [...on].filter(p => p.task === t).sort((a, b) => a.x - b.x);
      if (f.length > 1) traces.push({type: 'scatter', mode: 'lines', x: f.map(p => p.x * scale(ax)), y: f.map(p => p.y * scale(ay)),
        line: {color: '#d62828', width: 1, shape: ax.up ? 'vh' : 'hv'}, opacity: 0.6, hoverinfo: 'skip', showlegend: false});
    });
    const xs = pts.map(p => p.x), title = a => esc(a.label + (a.bytes ? ' (MB)' : '') + (a.up ? ', higher' : ', lower') + ' is better');
    const log = xs.length > 0 && Math.min(...xs) > 0 && Math.max(...xs) / Math.min(...xs) > 100;
    S.front = [...on].map(p => p.r.id);
    return Plotly.react($('board-plot'), traces, {height: 380, margin: {t: 36, r: 16, b: 48, l: 64},
      title: {text: esc(pts.length + ' runs plotted, ' + on.size + ' on the front'), font: {size: 13}},
      xaxis: {title: {text: title(ax)}, type: log ? 'log' : 'linear'}, yaxis: {title: {text: title(ay)}},
      legend: {orientation: 'h', y: -0.2}}, PLOT);
  }

  function drawTable(rows) {
    const t = el('table', {id: 'board-runs'}), head = t.createTHead().insertRow(), body = t.createTBody();
    head.appendChild(el('th', {title: 'compare'}, '✓'));
    COLS.forEach(([k, label]) => {
      const th = el('th', {'data-key': k, class: k === S.x || k === S.y ? 'axis' : ''}, label + (S.sort === k ? (S.asc ? ' ▲' : ' ▼') : ''));
      th.addEventListener('click', () => { S.asc = S.sort === k ? !S.asc : true; S.sort = k; draw(); });
      head.appendChild(th);
    });
    rows.forEach(r => {
      const tr = body.insertRow(), box = el('input', {type: 'checkbox', 'aria-label': 'compare ' + r.id});
      tr.dataset.run = r.id; tr.dataset.method = r.method;
      tr.className = (r.status === 'success' ? '' : 'failed') + (S.picked.includes(r.i) ? ' picked' : '');
      box.checked = S.picked.includes(r.i);
      box.addEventListener('change', () => toggle(r.i));
      tr.insertCell().appendChild(box);
      COLS.forEach(([k]) => { const td = tr.insertCell(); td.textContent = fmt(k, cell(r, k)); if (k === S.x || k === S.y) td.className = 'axis'; });
    });
    $('board-table').replaceChildren(t);
  }

  function grid(title, lines, runs) {
    const box = el('div'), t = el('table'), head = t.createTHead().insertRow();
    box.appendChild(el('h4', {}, title));
    head.appendChild(el('th', {}, ''));
    runs.forEach(r => head.appendChild(el('th', {}, r.id + ' (' + r.config + ')')));
    lines.forEach(([name, cells]) => { const tr = t.insertRow(); tr.insertCell().textContent = name; cells.forEach(c => { tr.insertCell().textContent = c; }); });
    box.appendChild(t);
    return box;
  }

  function drawCompare() {
    const runs = S.picked.map(i => D.runs[i]), out = $('board-compare');
    out.replaceChildren();
    if (runs.length < 2) {
      out.appendChild(el('p', {class: 'muted'}, 'Tick two or more runs to compare their metrics, per-class scores and loss curves side by side.'));
      return;
    }
    out.appendChild(el('h3', {}, 'Comparing ' + runs.length + ' runs'));
    const side = el('div', {class: 'side'}), keys = D.axes.map(a => a.key).filter(k => runs.some(r => isNum(r.v[k])));
    side.appendChild(grid('Metrics and costs', keys.map(k => [AX[k].label, runs.map(r => fmt(k, r.v[k]))]), runs));
    const classes = [...new Set(runs.flatMap(r => Object.keys(r.pc)))], lines = [];
    classes.forEach(c => ['precision', 'recall', 'f1', 'support'].forEach(m => {
      if (runs.some(r => r.pc[c] && isNum(r.pc[c][m]))) lines.push([c + ' · ' + m, runs.map(r => fmt(m, (r.pc[c] || {})[m]))]);
    }));
    if (lines.length) side.appendChild(grid('Per-class scores', lines, runs));
    out.appendChild(side);
    const traces = runs.flatMap((r, j) => [
      {x: r.loss.map(p => p[0]), y: r.loss.map(p => p[1]), name: esc(r.id + ' train'), line: {color: PALETTE[j % PALETTE.length]}},
      {x: r.evl.map(p => p[0]), y: r.evl.map(p => p[1]), name: esc(r.id + ' eval'), line: {color: PALETTE[j % PALETTE.length], dash: 'dash'}},
    ]).filter(t => t.x.length).map(t => Object.assign({type: 'scatter', mode: 'lines+markers'}, t));
    const div = el('div', {class: 'plot', id: 'board-loss'});
    out.appendChild(div);
    Plotly.newPlot(div, traces, {height: 340, margin: {t: 36, r: 16, b: 48, l: 64},
      title: {text: 'Loss curves (train solid, eval dashed)', font: {size: 13}},
      xaxis: {title: {text: 'optimizer step'}}, yaxis: {title: {text: 'loss'}, rangemode: 'tozero'}}, PLOT);
  }

  function toggle(i) {
    S.picked = S.picked.includes(i) ? S.picked.filter(j => j !== i) : S.picked.concat([i]);
    draw();
    drawCompare();
  }

  function draw() {
    S.rows = sorted(filtered());
    $('board-count').textContent = S.rows.length + ' of ' + D.runs.length + ' runs';
    drawTable(S.rows);
    S.drawn = drawPlot(S.rows);  // Plotly's promise: resolves once the plot shows the new state
    return S.drawn;
  }

  // The filtered rows in table order, as report.csv writes them (booleans as True/False; a string that
  // starts like a spreadsheet formula and is not a number gets a leading ', as escape.csv_cell does).
  function csv() {
    const cell = v => (typeof v === 'string' && /^[=+\-@\t\r]/.test(v) && !/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(v) ? "'" + v : v);
    const q = v => { if (v === null || v === undefined) return ''; const s = typeof v === 'boolean' ? (v ? 'True' : 'False') : String(cell(v));
      return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; };
    return [D.columns].concat(S.rows.map(r => D.rows[r.i])).map(row => row.map(q).join(',')).join('\n') + '\n';
  }
  function download() {
    const a = el('a', {href: URL.createObjectURL(new Blob([csv()], {type: 'text/csv'})), download: 'report-filtered.csv'});
    document.body.appendChild(a); a.click(); a.remove();
  }

  function select(id, label, options, value, set) {
    const lab = el('label', {}, label + ' '), s = el('select', {id: id});
    options.forEach(([v, text, group]) => {
      let parent = s;
      if (group) parent = s.querySelector('optgroup[label="' + group + '"]') || s.appendChild(el('optgroup', {label: group}));
      parent.appendChild(el('option', {value: v}, text));
    });
    s.value = value;
    s.addEventListener('change', () => { set(s.value); draw(); });
    lab.appendChild(s);
    return lab;
  }

  const controls = $('board-controls');
  FIELDS.forEach(f => controls.appendChild(select('board-' + f, f, [['', '(all)']].concat(
    [...new Set(D.runs.map(r => r[f]))].sort().map(v => [v, v])), '', v => { S.filters[f] = v; })));
  const axisOptions = D.axes.map(a => [a.key, a.label, a.kind === 'cost' ? 'cost' : 'quality']);
  controls.appendChild(select('board-x', 'x axis', axisOptions, S.x, v => { S.x = v; }));
  controls.appendChild(select('board-y', 'y axis', axisOptions, S.y, v => { S.y = v; }));
  const button = el('button', {type: 'button', id: 'board-csv'}, 'Export CSV');
  button.addEventListener('click', download);
  controls.appendChild(button);
  controls.appendChild(el('span', {id: 'board-count', class: 'muted'}));
  document.getElementById('board').hidden = false;
  window.peftbenchBoard = {state: S, csv: csv, draw: draw, ready: draw().then(() => performance.now())};
  drawCompare();
  $('board-plot').on('plotly_click', ev => { const i = ev.points[0].customdata; if (D.runs[i]) toggle(i); });
}());
