// Requests per second, error rate and p99 per service, from the gateway's own counters.

import * as api from '../api.js';
import { h, clear } from '../dom.js';
import { errorBanner } from '../entities.js';
import { parse, rates, totals } from '../metrics.js';

const REFRESH_MS = 1000;

function fixed(value, digits, unit = '') {
  return value === null || value === undefined || Number.isNaN(value) ? '–'
    : value.toFixed(digits) + unit;
}

export async function render(main) {
  const info = await api.get('/');
  const prefix = info.configuration.metrics_prefix || 'fastgw';
  const tbody = h('tbody');
  const status = h('p', { class: 'muted' }, 'Measuring…');
  main.append(h('h1', {}, 'Dashboard'), status,
    h('table', { id: 'dashboard-table' },
      h('thead', {}, h('tr', {}, ['service', 'requests/s', 'error rate', 'p99', 'requests']
        .map((t) => h('th', {}, t)))),
      tbody));
  let previous = null;
  async function poll() {
    let text;
    try {
      text = await api.call('GET', '/metrics', undefined, { raw: true });
    } catch (err) {
      clear(status).append(errorBanner(err));
      return;
    }
    const now = { at: performance.now(), totals: totals(parse(text), prefix) };
    if (previous) {
      const seconds = (now.at - previous.at) / 1000;
      clear(tbody);
      for (const row of rates(previous.totals, now.totals, seconds)) {
        tbody.append(h('tr', { 'data-service': row.service },
          h('td', {}, row.service), h('td', {}, fixed(row.rps, 1)),
          h('td', {}, fixed(row.errorRate === null ? null : row.errorRate * 100, 1, ' %')),
          h('td', {}, fixed(row.p99, 1, ' ms')), h('td', {}, String(row.total))));
      }
      status.textContent = `Over the last ${seconds.toFixed(1)} s, refreshed every second.`;
    }
    previous = now;
  }
  await poll();
  const timer = setInterval(poll, REFRESH_MS);
  return () => clearInterval(timer);
}
