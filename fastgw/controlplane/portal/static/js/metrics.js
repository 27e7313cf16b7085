// The gateway's own counters (GET /metrics, Prometheus text) turned into per-service
// rates between two scrapes: requests per second, error rate (5xx share) and p99 latency
// (interpolated inside its histogram bucket, as Prometheus' histogram_quantile does).

const LINE = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function parse(text) {
  const samples = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const labels = {};
    for (const [, key, value] of (m[2] || '').matchAll(LABEL)) {
      labels[key] = value.replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    }
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

// Totals per service: {requests, errors, buckets: Map(le -> cumulative count)}.
export function totals(samples, prefix) {
  const out = new Map();
  const entry = (service) => {
    if (!out.has(service)) out.set(service, { requests: 0, errors: 0, buckets: new Map() });
    return out.get(service);
  };
  for (const s of samples) {
    if (s.name === `${prefix}_http_requests_total`) {
      const e = entry(s.labels.service);
      e.requests += s.value;
      if (Number(s.labels.code) >= 500) e.errors += s.value;
    } else if (s.name === `${prefix}_request_latency_ms_bucket`) {
      const e = entry(s.labels.service);
      const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le);
      e.buckets.set(le, (e.buckets.get(le) || 0) + s.value);
    }
  }
  return out;
}

export function quantile(q, buckets) {
  const bounds = [...buckets.keys()].sort((a, b) => a - b);
  if (!bounds.length) return null;
  const total = buckets.get(bounds[bounds.length - 1]);
  if (!total) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const bound of bounds) {
    const count = buckets.get(bound);
    if (count >= rank) {
      if (bound === Infinity) return lower;  // beyond the last finite bucket
      return lower + (bound - lower) * ((rank - below) / Math.max(count - below, 1));
    }
    lower = bound;
    below = count;
  }
  return lower;
}

// Per service, between two totals taken `seconds` apart.
export function rates(before, after, seconds) {
  const rows = [];
  for (const [service, now] of after) {
    const then = before.get(service) || { requests: 0, errors: 0, buckets: new Map() };
    const requests = now.requests - then.requests;
    const delta = new Map();
    for (const [le, count] of now.buckets) delta.set(le, count - (then.buckets.get(le) || 0));
    rows.push({
      service,
      rps: requests / seconds,
      errorRate: requests > 0 ? (now.errors - then.errors) / requests : null,
      p99: requests > 0 ? quantile(0.99, delta) : null,
      total: now.requests,
    });
  }
  return rows.sort((a, b) => a.service.localeCompare(b.service));
}
