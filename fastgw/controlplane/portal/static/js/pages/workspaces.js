import * as api from '../api.js';
import { h } from '../dom.js';
import { listPage } from '../entities.js';

export function render(main, _params, app) {
  return listPage(main, {
    collection: 'workspaces', title: 'Workspaces', newLabel: 'New Workspace',
    scoped: false, schemaPath: '/schemas/workspaces', fields: ['name', 'comment'],
    columns: [
      { title: 'name', cell: (w) => h('span', { class: w.name === api.workspace() ? 'current' : '' },
        w.name) },
      { title: 'comment', cell: (w) => w.comment || '' },
      { title: 'id', cell: (w) => h('code', {}, w.id) },
    ],
    rowActions: (w, refresh) => h('button', {
      type: 'button', class: 'secondary', disabled: w.name === api.workspace(),
      onclick: async () => { api.setWorkspace(w.name); app.showWorkspace(); await refresh(); },
    }, 'Use'),
  });
}
