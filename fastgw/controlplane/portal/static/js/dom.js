// Page building with one rule: data from the API reaches the page as text, never as HTML.
// Children that are not nodes become Text nodes; attribute values go through
// setAttribute. Nothing in the portal assigns innerHTML.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (name === 'value' && 'value' in el) {
      el.value = String(value);
    } else if (name === 'checked' || name === 'selected' || name === 'multiple') {
      el[name] = Boolean(value);
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

// A link inside the app: #/collection/id, every part encoded.
export function link(text, ...parts) {
  return h('a', { href: '#/' + parts.map(encodeURIComponent).join('/') }, text);
}

export function tags(values) {
  return (values || []).map((t) => h('span', { class: 'tag' }, t));
}

export function copyButton(value, label = 'Copy') {
  return h('button', {
    type: 'button', class: 'secondary', 'data-copy': value,
    onclick: async (ev) => {
      const button = ev.currentTarget;
      try {
        await navigator.clipboard.writeText(value);
      } catch {
        // No clipboard permission (plain http on another host): select a text field.
        const field = h('textarea', { readonly: true }, value);
        document.body.append(field);
        field.select();
        document.execCommand('copy');
        field.remove();
      }
      button.textContent = 'Copied';
      setTimeout(() => { button.textContent = label; }, 1500);
    },
  }, label);
}
