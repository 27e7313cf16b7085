// Forms rendered from Kong schema documents (GET /schemas/...): one control per field,
// labelled with the field's exact Kong name. Admin API errors are shown beside the field
// they name; the values typed stay where they are.

import { h, append, clear } from './dom.js';

// {fields: [{name: attrs}]} -> Map(name -> attrs)
export function fieldMap(doc) {
  const out = new Map();
  for (const entry of doc.fields || []) {
    const [name, attrs] = Object.entries(entry)[0];
    out.set(name, attrs);
  }
  return out;
}

const controlId = (path) => 'field-' + path.replace(/[^A-Za-z0-9_-]/g, '-');

function isListOf(attrs) {
  return attrs.type === 'array' || attrs.type === 'set';
}

function hintFor(attrs) {
  if (isListOf(attrs) && !(attrs.elements && attrs.elements.one_of)) return 'one per line';
  if (attrs.between) return `${attrs.between[0]} to ${attrs.between[1]}`;
  return null;
}

// One control for one field. `options` gives the choices of a foreign key:
// [{value, text}] (a service's id and name).
function control(path, attrs, value, options) {
  const id = controlId(path);
  const common = { id, name: path, 'data-path': path, 'data-type': attrs.type };
  if (attrs.type === 'foreign') {
    const chosen = value && typeof value === 'object' ? value.id : value;
    const select = h('select', common, h('option', { value: '' }, ''));
    for (const option of options || []) {
      select.append(h('option', { value: option.value, selected: option.value === chosen },
        option.text));
    }
    return select;
  }
  if (attrs.type === 'boolean') {
    return h('input', { ...common, type: 'checkbox', checked: value === true });
  }
  if (attrs.one_of) {
    const select = h('select', common);
    if (!attrs.required) select.append(h('option', { value: '' }, ''));
    for (const choice of attrs.one_of) {
      select.append(h('option', { value: String(choice), selected: choice === value },
        String(choice)));
    }
    return select;
  }
  if (isListOf(attrs) && attrs.elements && attrs.elements.one_of) {
    const select = h('select', { ...common, multiple: true,
      size: Math.min(attrs.elements.one_of.length, 6) });
    const chosen = new Set(value || []);
    for (const choice of attrs.elements.one_of) {
      select.append(h('option', { value: String(choice), selected: chosen.has(choice) },
        String(choice)));
    }
    return select;
  }
  if (isListOf(attrs)) {
    return h('textarea', { ...common, rows: 2 }, (value || []).join('\n'));
  }
  if (attrs.type === 'integer' || attrs.type === 'number') {
    return h('input', { ...common, type: 'number', step: attrs.type === 'integer' ? 1 : 'any',
      value: value ?? '' });
  }
  return h('input', { ...common, type: 'text', value: value ?? '', autocomplete: 'off' });
}

function fieldRow(path, name, attrs, value, options) {
  const id = controlId(path);
  const hint = hintFor(attrs);
  return h('div', { class: 'field', 'data-field': path },
    h('label', { for: id }, name),
    control(path, attrs, value, options),
    hint ? h('span', { class: 'hint' }, hint) : null,
    h('p', { class: 'field-error', id: 'error-' + id, role: 'alert' }));
}

// Rows for `names` of a record (nested records become fieldsets, recursively).
function rows(prefix, schemaFields, names, values, options) {
  const out = [];
  for (const name of names) {
    const attrs = schemaFields.get(name);
    if (!attrs) continue;
    const path = prefix ? `${prefix}.${name}` : name;
    const value = values ? values[name] : undefined;
    if (attrs.type === 'record' && attrs.fields) {
      const sub = fieldMap(attrs);
      out.push(h('fieldset', { 'data-field': path }, h('legend', {}, name),
        rows(path, sub, [...sub.keys()], value || {}, options),
        h('p', { class: 'field-error', id: 'error-' + controlId(path), role: 'alert' })));
    } else if (attrs.type !== 'map' && !(attrs.type === 'record')) {
      out.push(fieldRow(path, name, attrs, value ?? attrs.default, options[path]));
    }
  }
  return out;
}

// A form for `fields` (and `advanced` ones, folded) of a schema document.
// `values`: the entity being edited, or null for a new one.
export function entityForm({ doc, fields, advanced = [], values = null, options = {},
  submitLabel, onSubmit, onCancel, onChange = null }) {
  const schemaFields = fieldMap(doc);
  const form = h('form', { class: 'entity', novalidate: true });
  append(form, rows('', schemaFields, fields, values, options));
  if (advanced.length) {
    form.append(h('details', { class: 'advanced' }, h('summary', {}, 'Advanced'),
      rows('', schemaFields, advanced, values, options)));
  }
  const formErrors = h('ul', { class: 'form-errors', role: 'alert' });
  form.append(formErrors, h('div', { class: 'actions-row' },
    h('button', { type: 'submit' }, submitLabel),
    onCancel ? h('button', { type: 'button', class: 'secondary', onclick: onCancel },
      'Cancel') : null));
  if (onChange) {
    form.addEventListener('change', (ev) => {
      const path = ev.target.dataset && ev.target.dataset.path;
      if (path) onChange(path, readForm(form, schemaFields, true));
    });
  }
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const body = readForm(form, schemaFields, values !== null);
    try {
      await onSubmit(body);
    } catch (err) {
      showErrors(form, err);
    }
  });
  return form;
}

function attrsAt(schemaFields, path) {
  let fields = schemaFields;
  let attrs = null;
  for (const part of path.split('.')) {
    attrs = fields.get(part);
    if (!attrs) return null;
    if (attrs.fields) fields = fieldMap(attrs);
  }
  return attrs;
}

function setPath(obj, path, value) {
  const parts = path.split('.');
  let cur = obj;
  for (const part of parts.slice(0, -1)) {
    cur[part] = cur[part] && typeof cur[part] === 'object' ? cur[part] : {};
    cur = cur[part];
  }
  cur[parts[parts.length - 1]] = value;
}

// The body to send: typed values; an emptied field is null when editing (clears it) and
// left out when creating (the default applies).
export function readForm(form, schemaFields, editing) {
  const body = {};
  for (const el of form.querySelectorAll('[data-path]')) {
    const path = el.dataset.path;
    const attrs = attrsAt(schemaFields, path);
    if (!attrs) continue;
    let value;
    if (attrs.type === 'boolean') {
      value = el.checked;
    } else if (el.multiple) {
      value = [...el.selectedOptions].map((o) => o.value);
    } else if (isListOf(attrs)) {
      const items = el.value.split('\n').map((s) => s.trim()).filter(Boolean);
      const numeric = attrs.elements && ['integer', 'number'].includes(attrs.elements.type);
      value = items.length ? items.map((s) => (numeric && s !== '' && !Number.isNaN(Number(s))
        ? Number(s) : s)) : null;
    } else if (el.value === '') {
      value = null;
    } else if (attrs.type === 'integer' || attrs.type === 'number') {
      value = Number.isNaN(Number(el.value)) ? el.value : Number(el.value);
    } else if (attrs.type === 'foreign') {
      value = { id: el.value };
    } else {
      value = el.value;
    }
    if (value === null && !editing) continue;
    setPath(body, path, value);
  }
  return body;
}

function clearErrors(form) {
  for (const el of form.querySelectorAll('.field-error')) el.textContent = '';
  for (const el of form.querySelectorAll('.invalid')) el.classList.remove('invalid');
  clear(form.querySelector('.form-errors'));
}

// Kong's `fields` ({"host": "...", "healthchecks": {"active": {...}}, "@entity": [...]})
// flattened to dotted paths.
export function flattenErrors(fields, prefix = '') {
  const out = [];
  for (const [key, value] of Object.entries(fields || {})) {
    const path = key === '@entity' ? prefix : (prefix ? `${prefix}.${key}` : key);
    if (Array.isArray(value)) {
      value.forEach((v, i) => {
        if (v === null) return;
        if (typeof v === 'object') out.push(...flattenErrors(v, path));
        else out.push([path, key === '@entity' ? v : `[${i}] ${v}`]);
      });
    } else if (value && typeof value === 'object') {
      out.push(...flattenErrors(value, path));
    } else {
      out.push([path, String(value)]);
    }
  }
  return out;
}

export function showErrors(form, err) {
  const messages = err && err.body && err.body.fields ? flattenErrors(err.body.fields) : [];
  let placed = false;
  for (const [path, message] of messages) {
    const target = form.querySelector('#error-' + controlId(path || '@'));
    if (path && target) {
      target.textContent = target.textContent ? `${target.textContent}; ${message}` : message;
      const row = target.closest('.field, fieldset');
      if (row) row.classList.add('invalid');
      const details = target.closest('details');
      if (details) details.open = true;
      placed = true;
    } else {
      form.querySelector('.form-errors').append(h('li', {}, path ? `${path}: ${message}`
        : message));
      placed = true;
    }
  }
  if (!placed) {
    form.querySelector('.form-errors').append(h('li', {}, err && err.message ? err.message
      : String(err)));
  }
}
