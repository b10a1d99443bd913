// Progressive enhancement: every page works without this script (forms and links); with it, the overview's
// figures and a device's live session refresh in place. No framework, nothing loaded from elsewhere.

function setLive(key, text) {
  for (const el of document.querySelectorAll(`[data-live="${key}"]`)) el.textContent = text;
}

const fmt = (n) => Math.round(n).toLocaleString('en-US');

async function getJson(url) {
  const r = await fetch(url, {
    headers: { accept: 'application/json' },
    credentials: 'same-origin',
    cache: 'no-store',
  });
  if (r.status === 401 || r.status === 403) {
    location.reload(); // the session ended: the page says so
    throw new Error('signed out');
  }
  if (!r.ok) throw new Error(`HTTP ${r.status}`);
  return r.json();
}

async function refreshOverview() {
  const o = await getJson('/overview.json');
  setLive('at', o.at);
  for (const k of ['total', 'active', 'suspended', 'revoked']) setLive(`devices.${k}`, fmt(o.devices[k]));
  setLive('connected', fmt(o.connected));
  setLive('revokedToday', fmt(o.revokedToday));
  setLive('expiring30', fmt(o.expiring30));
  setLive('expiring90', fmt(o.expiring90));
  setLive('broker.connects', fmt(o.broker.connects));
  setLive('broker.window', String(o.broker.windowSeconds));
  for (const c of o.crls) setLive(`crl.${c.ca}.age`, String(c.ageSeconds));
  const body = document.querySelector('[data-live-table="refusals"]');
  if (body) {
    const rows = Object.entries(o.broker.refusals).sort((a, b) => b[1] - a[1]);
    body.replaceChildren(
      ...(rows.length ? rows : [['none', null]]).map(([k, v]) => {
        const tr = document.createElement('tr');
        const a = document.createElement('td');
        a.textContent = k;
        const b = document.createElement('td');
        b.className = 'n';
        b.textContent = v === null ? '' : String(Math.round(v * 10) / 10);
        tr.append(a, b);
        return tr;
      }),
    );
  }
}

async function followSession(box) {
  const id = box.dataset.device;
  const since = box.dataset.since;
  const action = box.dataset.action;
  if (!id || !since || action === 'reset' || action === 'reinstate') return;
  const started = Date.now();
  for (;;) {
    try {
      const d = await getJson(
        `/devices/${encodeURIComponent(id)}/live.json?since=${encodeURIComponent(since)}`,
      );
      const badge = document.querySelector('[data-live="status"] .badge');
      if (badge) {
        badge.textContent = d.status;
        badge.className = `badge ${d.status}`;
      }
      if (d.session) {
        setLive('session', d.session.text);
        if (d.session.state !== 'open') {
          box.dataset.state = d.session.state;
          return;
        }
        if (Date.now() - started > 15000)
          setLive('session', `${d.session.text} (still open after 15 s: check the broker nodes)`);
      }
    } catch {
      // try again
    }
    await new Promise((r) => setTimeout(r, Date.now() - started > 15000 ? 3000 : 300));
  }
}

document.addEventListener('DOMContentLoaded', () => {
  if (location.pathname === '/') setInterval(() => refreshOverview().catch(() => {}), 5000);
  const box = document.getElementById('outcome');
  if (box?.dataset.device) followSession(box);
});
