// The portal's only way out: the Admin API of the listener that served it.

const WORKSPACE_KEY = 'fastgw.workspace';
const TOKEN_KEY = 'fastgw.token';

export class ApiError extends Error {
  constructor(status, body) {
    const message = body && typeof body === 'object' && body.message ? body.message
      : `HTTP ${status}`;
    super(message);
    this.status = status;
    this.body = body;
  }
}

export function workspace() {
  return localStorage.getItem(WORKSPACE_KEY) || 'default';
}

export function setWorkspace(name) {
  localStorage.setItem(WORKSPACE_KEY, name);
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

let onUnauthorized = () => {};
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

// Entity paths are sent under /{workspace} (except for the default one).
export function scoped(path) {
  const ws = workspace();
  return ws === 'default' ? path : '/' + encodeURIComponent(ws) + path;
}

export async function call(method, path, body, { raw = false } = {}) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers['Kong-Admin-Token'] = token;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (response.status === 401) onUnauthorized();
  if (raw && response.ok) return text;
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = { message: text }; }
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const get = (path) => call('GET', path);
export const post = (path, body) => call('POST', path, body);
export const patch = (path, body) => call('PATCH', path, body);
export const del = (path) => call('DELETE', path);

// Every page of a list (Kong's "next" links, which keep the path asked), up to a bound.
export async function listAll(path, limit = 5000) {
  const items = [];
  let next = path + (path.includes('?') ? '&' : '?') + 'size=1000';
  while (next && items.length < limit) {
    const page = await get(next);
    items.push(...page.data);
    next = page.next;
  }
  return items;
}

const schemaCache = new Map();
export async function schema(path) {
  if (!schemaCache.has(path)) schemaCache.set(path, get(path));
  return schemaCache.get(path);
}
