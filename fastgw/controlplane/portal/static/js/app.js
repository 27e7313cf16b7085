// The portal's shell: navigation, the chosen workspace, the admin token, and a page per
// location (#/upstreams, #/upstreams/{id}, ...).

import * as api from './api.js';
import { h, clear } from './dom.js';
import { errorBanner } from './entities.js';
import * as dashboard from './pages/dashboard.js';
import * as plugins from './pages/plugins.js';
import * as routes from './pages/routes.js';
import * as services from './pages/services.js';
import * as upstream from './pages/upstream.js';
import * as upstreams from './pages/upstreams.js';
import * as workspaces from './pages/workspaces.js';

const PAGES = {
  dashboard: (params) => (params.length ? null : dashboard),
  workspaces: (params) => (params.length ? null : workspaces),
  upstreams: (params) => (params.length ? upstream : upstreams),
  services: (params) => (params.length ? null : services),
  routes: (params) => (params.length ? null : routes),
  plugins: (params) => (params.length ? null : plugins),
};

const main = document.getElementById('main');
let cleanup = null;
let generation = 0;

const app = {
  showWorkspace() {
    document.getElementById('current-workspace').textContent = api.workspace();
  },
};

function askToken() {
  const panel = document.getElementById('token-panel');
  if (!panel.hidden) return;
  const input = h('input', { id: 'admin-token', type: 'password', autocomplete: 'off' });
  panel.append(h('form', {
    onsubmit: (ev) => {
      ev.preventDefault();
      api.setToken(input.value);
      clear(panel).hidden = true;
      show();
    },
  }, h('label', { for: 'admin-token' }, 'admin token'), ' ', input, ' ',
  h('button', { type: 'submit' }, 'Use token')));
  panel.hidden = false;
}

async function show() {
  const current = ++generation;
  if (cleanup) cleanup();
  cleanup = null;
  const [name, ...params] = (location.hash.replace(/^#\/?/, '') || 'upstreams').split('/')
    .map(decodeURIComponent);
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', a.getAttribute('href') === `#/${name}`);
  }
  clear(main);
  const page = PAGES[name] && PAGES[name](params);
  if (!page) {
    main.append(h('h1', {}, 'Not found'));
    return;
  }
  try {
    const done = await page.render(main, params, app);
    if (current !== generation) { if (done) done(); return; }  // left meanwhile
    cleanup = done;
  } catch (err) {
    main.append(errorBanner(err));
  }
}

api.whenUnauthorized(askToken);
app.showWorkspace();
window.addEventListener('hashchange', show);
show();
