import * as api from '../api.js';
import { tags } from '../dom.js';
import { listPage } from '../entities.js';

export function render(main) {
  let services = new Map();
  const loadServices = async () => {
    const list = await api.listAll(api.scoped('/services'));
    services = new Map(list.map((s) => [s.id, s]));
  };
  const join = (values) => (values || []).join(', ');
  return listPage(main, {
    collection: 'routes', title: 'Routes', newLabel: 'New Route', schemaPath: '/schemas/routes',
    fields: ['name', 'service', 'paths', 'protocols', 'methods', 'hosts', 'strip_path',
      'preserve_host'],
    advanced: ['regex_priority', 'path_handling', 'https_redirect_status_code',
      'request_buffering', 'response_buffering', 'tags'],
    beforeRefresh: loadServices,
    options: async () => {
      await loadServices();
      return { service: [...services.values()].map((s) => ({ value: s.id, text: s.name || s.id })) };
    },
    columns: [
      { title: 'name', cell: (r) => r.name || '' },
      { title: 'service', cell: (r) => {
        const s = r.service && services.get(r.service.id);
        return s ? (s.name || s.id) : '';
      } },
      { title: 'paths', cell: (r) => join(r.paths) },
      { title: 'protocols', cell: (r) => join(r.protocols) },
      { title: 'methods', cell: (r) => join(r.methods) },
      { title: 'hosts', cell: (r) => join(r.hosts) },
      { title: 'tags', cell: (r) => tags(r.tags) },
    ],
    // The form gives the service as its id: {id} or null (no service).
    prepare: (body) => body,
  });
}
