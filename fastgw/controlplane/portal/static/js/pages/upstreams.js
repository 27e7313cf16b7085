import { h, link, tags } from '../dom.js';
import { listPage } from '../entities.js';

export function render(main) {
  return listPage(main, {
    collection: 'upstreams', title: 'Upstreams', newLabel: 'New Upstream',
    schemaPath: '/schemas/upstreams', fields: ['name'],
    advanced: ['algorithm', 'hash_on', 'hash_fallback', 'hash_on_header', 'hash_on_cookie',
      'hash_on_query_arg', 'hash_on_uri_capture', 'slots', 'host_header', 'healthchecks', 'tags'],
    columns: [
      { title: 'name', cell: (u) => link(u.name, 'upstreams', u.id) },
      { title: 'algorithm', cell: (u) => u.algorithm },
      { title: 'tags', cell: (u) => tags(u.tags) },
      { title: 'id', cell: (u) => h('code', {}, u.id) },
    ],
  });
}
