// Plugins: list, add and edit from the plugin schemas the node serves
// (GET /schemas/plugins/{name}), for whatever plugins it runs (GET /).

import * as api from '../api.js';
import { h } from '../dom.js';
import { listPage } from '../entities.js';

export async function render(main) {
  const info = await api.get('/');
  const available = Object.keys(info.plugins.available_on_server || {}).sort();
  let services = new Map();
  let routes = new Map();
  const load = async () => {
    const [s, r] = await Promise.all([api.listAll(api.scoped('/services')),
      api.listAll(api.scoped('/routes'))]);
    services = new Map(s.map((x) => [x.id, x]));
    routes = new Map(r.map((x) => [x.id, x]));
  };
  const label = (map, ref) => {
    const e = ref && map.get(ref.id);
    return e ? (e.name || e.id) : '';
  };
  return listPage(main, {
    collection: 'plugins', title: 'Plugins', newLabel: 'New Plugin',
    fields: ['name', 'service', 'route', 'enabled', 'config'],
    advanced: ['protocols', 'instance_name', 'tags'],
    beforeRefresh: load,
    doc: async (values) => {
      const name = (values && values.name) || available[0];
      const entity = await api.schema('/schemas/plugins');
      const plugin = name ? await api.schema(`/schemas/plugins/${encodeURIComponent(name)}`)
        : { fields: [] };
      const own = new Map(plugin.fields.map((f) => Object.entries(f)[0]));
      // The plugin entity's fields, with the plugin's own config (and protocols) schema.
      return { fields: entity.fields.map((f) => {
        const [field, attrs] = Object.entries(f)[0];
        if (field === 'name') return { name: { ...attrs, one_of: available } };
        return own.has(field) ? { [field]: own.get(field) } : f;
      }) };
    },
    onChange: (path, values, reopen) => {
      if (path === 'name') reopen({ name: values.name });
    },
    options: async () => {
      await load();
      const choices = (map) => [...map.values()].map((e) => ({ value: e.id, text: e.name || e.id }));
      return { service: choices(services), route: choices(routes) };
    },
    columns: [
      { title: 'name', cell: (p) => p.name },
      { title: 'service', cell: (p) => label(services, p.service) },
      { title: 'route', cell: (p) => label(routes, p.route) },
      { title: 'enabled', cell: (p) => (p.enabled ? 'yes' : 'no') },
      { title: 'id', cell: (p) => h('code', {}, p.id) },
    ],
  });
}
