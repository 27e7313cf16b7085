import { h, copyButton, tags } from '../dom.js';
import { listPage } from '../entities.js';

export function render(main) {
  return listPage(main, {
    collection: 'services', title: 'Services', newLabel: 'New Service',
    schemaPath: '/schemas/services',
    fields: ['name', 'protocol', 'host', 'port', 'path', 'connect_timeout', 'write_timeout',
      'read_timeout', 'retries'],
    advanced: ['enabled', 'tags'],
    columns: [
      { title: 'name', cell: (s) => s.name || '' },
      { title: 'id', cell: (s) => h('span', {}, h('code', {}, s.id), ' ', copyButton(s.id)) },
      { title: 'host', cell: (s) => s.host },
      { title: 'port', cell: (s) => String(s.port) },
      { title: 'path', cell: (s) => s.path || '' },
      { title: 'tags', cell: (s) => tags(s.tags) },
    ],
    notice: (s) => h('div', { class: 'notice', id: 'created' },
      `Service ${s.name || ''} created. ID: `, h('code', { id: 'created-id' }, s.id), ' ',
      copyButton(s.id, 'Copy ID')),
  });
}
