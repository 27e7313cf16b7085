// An upstream's page: its targets, "New Target", and the health of each target, refreshed.

import * as api from '../api.js';
import { h, tags } from '../dom.js';
import { errorBanner, listPage } from '../entities.js';

const REFRESH_MS = 1000;

export async function render(main, params) {
  const id = params[0];
  let upstream;
  try {
    upstream = await api.get(api.scoped(`/upstreams/${encodeURIComponent(id)}`));
  } catch (err) {
    main.append(errorBanner(err));
    return null;
  }
  const base = `/upstreams/${encodeURIComponent(upstream.id)}/targets`;
  await listPage(main, {
    collection: 'targets', title: `Upstream ${upstream.name}`, newLabel: 'New Target', base,
    intro: h('p', { class: 'muted' }, h('a', { href: '#/upstreams' }, 'Upstreams'),
      ` / algorithm ${upstream.algorithm}, id `, h('code', {}, upstream.id)),
    schemaPath: '/schemas/targets', fields: ['target', 'weight'], advanced: ['tags'],
    columns: [
      { title: 'target', cell: (t) => h('span', { class: 'mono' }, t.target) },
      { title: 'weight', cell: (t) => String(t.weight) },
      { title: 'health', cell: (t) => h('span', { class: 'health', 'data-health': t.id }, '') },
      { title: 'tags', cell: (t) => tags(t.tags) },
    ],
  });
  const healthUrl = api.scoped(`/upstreams/${encodeURIComponent(upstream.id)}/health`);
  async function poll() {
    try {
      const report = await api.get(healthUrl);
      for (const target of report.data) {
        const cell = main.querySelector(`[data-health="${CSS.escape(target.id)}"]`);
        if (cell && cell.textContent !== target.health) {
          cell.textContent = target.health;
          cell.className = 'health ' + target.health;
        }
      }
    } catch {
      // The next poll tries again; a deleted upstream ends with the page.
    }
  }
  await poll();
  const timer = setInterval(poll, REFRESH_MS);
  return () => clearInterval(timer);
}
