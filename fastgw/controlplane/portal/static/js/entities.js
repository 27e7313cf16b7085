// The list page every collection shares: a table of entities with Edit and Delete, a
// "New ..." button, and the form (Create, or Save when editing) rendered from /schemas.

import * as api from './api.js';
import { h, clear } from './dom.js';
import { entityForm } from './forms.js';

export function errorBanner(err) {
  return h('div', { class: 'error-banner', role: 'alert' }, err.message || String(err));
}

// spec: {collection, title, newLabel, columns: [{title, cell(entity)}], fields, advanced,
//        schemaPath or doc(values): the form's schema document,
//        options(): Promise<{path: [{value, text}]}>, prepare(body, editing),
//        notice(entity): a node shown after a create, base: list path (default /collection),
//        scoped: under the chosen workspace (default true), rowActions(entity): more buttons,
//        beforeRefresh(): run before each listing, onChange(path, values, reopen),
//        intro: a node shown under the title}
export async function listPage(main, spec) {
  const base = spec.base || '/' + spec.collection;
  const path = (p) => (spec.scoped === false ? p : api.scoped(p));
  const formSlot = h('div', { id: 'form-slot' });
  const noticeSlot = h('div', { id: 'notice-slot' });
  const tbody = h('tbody');
  const table = h('table', { id: spec.collection + '-table' },
    h('thead', {}, h('tr', {}, spec.columns.map((c) => h('th', {}, c.title)), h('th'))),
    tbody);
  main.append(h('h1', {}, spec.title), ...(spec.intro ? [spec.intro] : []),
    h('div', { class: 'toolbar' },
      h('button', { type: 'button', onclick: () => openForm(null) }, spec.newLabel)),
    noticeSlot, formSlot, table);

  async function refresh() {
    clear(tbody);
    let items;
    try {
      if (spec.beforeRefresh) await spec.beforeRefresh();
      items = await api.listAll(path(base));
    } catch (err) {
      tbody.append(h('tr', {}, h('td', { colspan: spec.columns.length + 1 }, errorBanner(err))));
      return;
    }
    if (!items.length) {
      tbody.append(h('tr', {}, h('td', { colspan: spec.columns.length + 1, class: 'muted' },
        `No ${spec.collection} yet.`)));
    }
    for (const entity of items) {
      tbody.append(h('tr', { 'data-id': entity.id },
        spec.columns.map((c) => h('td', {}, c.cell(entity))),
        h('td', { class: 'actions' },
          spec.rowActions ? spec.rowActions(entity, refresh) : null,
          h('button', { type: 'button', class: 'secondary', onclick: () => openForm(entity) },
            'Edit'),
          h('button', { type: 'button', class: 'danger', onclick: () => remove(entity) },
            'Delete'))));
    }
  }

  async function remove(entity) {
    // A delete cannot be undone (and cascades, e.g. a service's routes): ask first, by name.
    const label = entity.name || entity.username || entity.target || entity.id;
    if (!window.confirm(`Delete ${spec.collection.replace(/s$/, '')} "${label}"?`)) return;
    try {
      await api.del(path(`${base}/${encodeURIComponent(entity.id)}`));
      clear(noticeSlot);
    } catch (err) {
      clear(noticeSlot).append(errorBanner(err));
    }
    await refresh();
  }

  async function openForm(entity, draft = null) {
    clear(formSlot);
    clear(noticeSlot);
    const values = draft || entity;
    const [doc, options] = await Promise.all([
      spec.doc ? spec.doc(values) : api.schema(spec.schemaPath),
      spec.options ? spec.options() : {}]);
    const editing = entity !== null;
    const form = entityForm({
      doc, fields: spec.fields, advanced: spec.advanced || [], values, options,
      onChange: spec.onChange ? (p, current) => spec.onChange(p, current,
        (next) => openForm(entity, next)) : null,
      submitLabel: editing ? 'Save' : 'Create',
      onCancel: () => clear(formSlot),
      onSubmit: async (body) => {
        const data = spec.prepare ? spec.prepare(body, editing) : body;
        const saved = editing
          ? await api.patch(path(`${base}/${encodeURIComponent(entity.id)}`), data)
          : await api.post(path(base), data);
        clear(formSlot);
        if (!editing && spec.notice) noticeSlot.append(spec.notice(saved));
        await refresh();
      },
    });
    formSlot.append(h('h2', {}, editing ? `Edit ${entity.name || entity.target || entity.id}`
      : spec.newLabel), form);
    const first = form.querySelector('input, select, textarea');
    if (first) first.focus();
  }

  await refresh();
  return null;
}
