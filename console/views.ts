/** The console's pages: pure functions from data to HTML (console/routes.ts fetches the data). */
import { OPERATOR_REASONS } from '../pki/crl.ts';
import type { DeviceListRow } from '../registry/console.ts';
import type { PresenceHistoryRow } from '../registry/console-schema.ts';
import type { AuditRow, CertificateSummary, DeviceDetail, PrincipalRow } from '../registry/index.ts';
import { type Html, html, num, qs, raw, when } from './html.ts';
import type { Overview } from './overview.ts';
import type { Operator } from './session.ts';

export const NAV: [string, string][] = [
  ['/', 'Overview'],
  ['/devices', 'Devices'],
  ['/stations', 'Stations'],
  ['/services', 'Services'],
  ['/operators', 'Operators'],
  ['/audit', 'Audit log'],
  ['/expiring', 'Expiring'],
];

export function page(o: {
  title: string;
  path: string;
  op?: Operator | null;
  body: Html;
  h1?: Html;
}): string {
  const nav = o.op
    ? html`<nav aria-label="Main"><ul>${NAV.map(
        ([href, label]) =>
          html`<li><a href="${href}"${raw(
            (href === '/' ? o.path === '/' : o.path.startsWith(href)) ? ' aria-current="page"' : '',
          )}>${label}</a></li>`,
      )}</ul></nav>
      <div class="who"><span>Signed in as <strong>${o.op.actor}</strong></span>
        <form method="post" action="/signout"><input type="hidden" name="_csrf" value="${o.op.session.csrf}">
        <button type="submit" class="link">Sign out</button></form></div>`
    : html``;
  return `<!doctype html>${html`<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${o.title} · Fleet console</title>
<link rel="stylesheet" href="/assets/console.css"><script src="/assets/console.js" defer></script></head>
<body><a class="skip" href="#main">Skip to content</a>
<header><a class="brand" href="/">Fleet console</a>${nav}</header>
<main id="main" tabindex="-1"><h1>${o.h1 ?? o.title}</h1>${o.body}</main></body></html>`}`;
}

const badge = (status: string) => html`<span class="badge ${status}">${status}</span>`;

function connection(p: {
  connected: boolean;
  connectedAt: Date | null;
  disconnectedAt: Date | null;
  brokerNode: string | null;
  remoteAddress: string | null;
}): Html {
  if (p.connected)
    return html`<span class="badge online">online</span> since ${when(p.connectedAt)}
      <span class="muted">on ${p.brokerNode ?? '?'} from ${p.remoteAddress ?? '?'}</span>`;
  return p.disconnectedAt
    ? html`<span class="badge offline">offline</span> since ${when(p.disconnectedAt)}`
    : html`<span class="badge offline">never seen</span>`;
}

// ------------------------------------------------------------------------------------------------ overview

export function overviewBody(o: Overview): Html {
  const l = (key: string, value: string | number) => html`<span data-live="${key}">${value}</span>`;
  const refusals = Object.entries(o.broker.refusals).sort((a, b) => b[1] - a[1]);
  return html`<p class="muted" aria-live="polite">Updated <span data-live="at">${o.at}</span>; the numbers refresh every 5 seconds.</p>
<div class="cards">
  <section class="card" aria-labelledby="c-devices"><h2 id="c-devices">Devices</h2>
    <p class="big">${l('devices.total', num(o.devices.total))}</p>
    <ul class="plain">
      <li><a href="/devices${qs({ status: 'active' })}">Active</a>: ${l('devices.active', num(o.devices.active))}</li>
      <li><a href="/devices${qs({ status: 'suspended' })}">Suspended</a>: ${l('devices.suspended', num(o.devices.suspended))}</li>
      <li><a href="/devices${qs({ status: 'revoked' })}">Revoked</a>: ${l('devices.revoked', num(o.devices.revoked))}</li>
    </ul></section>
  <section class="card" aria-labelledby="c-conn"><h2 id="c-conn">Connected now</h2>
    <p class="big"><a href="/devices${qs({ connected: 'yes' })}">${l('connected', num(o.connected))}</a></p>
    <p class="muted">devices, from the brokers' presence records</p></section>
  <section class="card" aria-labelledby="c-rate"><h2 id="c-rate">Connects and refusals</h2>
    <p class="big">${l('broker.connects', num(Math.round(o.broker.connects)))} <small>connects / min</small></p>
    <table class="compact"><caption class="sr-only">Refusals per minute by reason</caption>
      <thead><tr><th scope="col">Refused, by reason</th><th scope="col" class="n">/ min</th></tr></thead>
      <tbody data-live-table="refusals">${
        refusals.length
          ? refusals.map(
              ([k, v]) => html`<tr><td>${k}</td><td class="n">${num(Math.round(v * 10) / 10)}</td></tr>`,
            )
          : html`<tr><td colspan="2" class="muted">none</td></tr>`
      }</tbody></table>
    <p class="muted">over the last <span data-live="broker.window">${o.broker.windowSeconds}</span> s of ${o.broker.nodes.length} broker node(s)${
      o.broker.nodes.some((n) => !n.ok)
        ? html`; <span class="warn">unreachable: ${o.broker.nodes
            .filter((n) => !n.ok)
            .map((n) => `${n.url} (${n.error ?? 'error'})`)
            .join(', ')}</span>`
        : ''
    }</p></section>
  <section class="card" aria-labelledby="c-rev"><h2 id="c-rev">Revocations today</h2>
    <p class="big">${l('revokedToday', num(o.revokedToday))}</p><p class="muted">devices, since 00:00 UTC</p></section>
  <section class="card" aria-labelledby="c-exp"><h2 id="c-exp">Certificates expiring</h2>
    <ul class="plain">
      <li><a href="/expiring${qs({ days: 30 })}">Within 30 days</a>: <strong>${l('expiring30', num(o.expiring30))}</strong></li>
      <li><a href="/expiring${qs({ days: 90 })}">Within 90 days</a>: <strong>${l('expiring90', num(o.expiring90))}</strong></li>
    </ul><p class="muted">active certificates, expired ones included</p></section>
  <section class="card" aria-labelledby="c-crl"><h2 id="c-crl">CRLs</h2>
    <table class="compact"><thead><tr><th scope="col">CA</th><th scope="col">Age</th><th scope="col">Next update</th></tr></thead>
    <tbody>${o.crls.map(
      (c) =>
        html`<tr><td>${c.ca}</td><td><span data-live="crl.${c.ca}.age">${c.ageSeconds}</span> s</td><td><time datetime="${c.nextUpdate}">${c.nextUpdate.slice(0, 16).replace('T', ' ')}</time></td></tr>`,
    )}</tbody></table></section>
  <section class="card" aria-labelledby="c-ca"><h2 id="c-ca">Certificate authorities</h2>
    <table class="compact"><thead><tr><th scope="col">CA</th><th scope="col">Expires</th><th scope="col" class="n">Days left</th></tr></thead>
    <tbody>${o.cas.map(
      (c) =>
        html`<tr><td>${c.name}</td><td><time datetime="${c.notAfter}">${c.notAfter.slice(0, 10)}</time></td><td class="n${c.daysLeft < 365 ? ' warn' : ''}">${num(c.daysLeft)}</td></tr>`,
    )}</tbody></table></section>
</div>`;
}

// ------------------------------------------------------------------------------------------------ devices

export interface DeviceQuery {
  q?: string;
  product?: string;
  fleet?: string;
  station?: string;
  status?: string;
  connected?: string;
  cursor?: string;
}

export function devicesBody(
  q: DeviceQuery,
  items: DeviceListRow[],
  next: string | undefined,
  total: { n: number; capped: boolean },
): Html {
  const sel = (v: string | undefined, opt: string) => raw(v === opt ? ' selected' : '');
  const base = { ...q, cursor: undefined };
  return html`<form class="filters" method="get" action="/devices" role="search" aria-label="Find devices">
  <div><label for="f-q">Id starts with</label><input id="f-q" name="q" value="${q.q ?? ''}" autocomplete="off" spellcheck="false"></div>
  <div><label for="f-product">Product</label><input id="f-product" name="product" value="${q.product ?? ''}"></div>
  <div><label for="f-fleet">Fleet</label><input id="f-fleet" name="fleet" value="${q.fleet ?? ''}"></div>
  <div><label for="f-station">Station</label><input id="f-station" name="station" value="${q.station ?? ''}"></div>
  <div><label for="f-status">Status</label><select id="f-status" name="status"><option value="">any</option>
    ${['active', 'suspended', 'revoked'].map((s) => html`<option${sel(q.status, s)}>${s}</option>`)}</select></div>
  <div><label for="f-connected">Connected</label><select id="f-connected" name="connected"><option value="">either</option>
    <option value="yes"${sel(q.connected, 'yes')}>connected now</option><option value="no"${sel(q.connected, 'no')}>not connected</option></select></div>
  <div class="go"><button type="submit">Search</button> <a href="/devices">Clear</a></div>
</form>
<p aria-live="polite"><strong>${total.capped ? `${num(total.n)}+` : num(total.n)}</strong> matching device${total.n === 1 ? '' : 's'}${
    q.cursor ? html` · <a href="/devices${qs(base)}">first page</a>` : ''
  }</p>
<div class="scroll"><table class="list"><caption class="sr-only">Devices in id order</caption>
<thead><tr><th scope="col">Id</th><th scope="col">Status</th><th scope="col">Connection</th><th scope="col">Product</th><th scope="col">Fleet</th><th scope="col">Enrolled by</th><th scope="col">Enrolled</th></tr></thead>
<tbody>${
    items.length
      ? items.map(
          (
            d,
          ) => html`<tr><th scope="row"><a href="/devices/${encodeURIComponent(d.id)}">${d.id}</a></th><td>${badge(d.status)}</td>
      <td data-label="Connection">${connection(d)}</td><td data-label="Product">${d.product}</td><td data-label="Fleet">${d.fleet}</td><td data-label="Enrolled by">${d.enrolledBy ?? '—'}</td><td data-label="Enrolled">${when(d.createdAt)}</td></tr>`,
        )
      : html`<tr><td colspan="7" class="muted">No device matches.</td></tr>`
  }</tbody></table></div>
${next ? html`<p class="pager"><a rel="next" href="/devices${qs({ ...base, cursor: next })}">Next page →</a></p>` : ''}`;
}

export interface ActionOutcome {
  action: string;
  seq?: number;
  at?: Date;
  by?: string;
}

export function deviceBody(
  d: DeviceDetail,
  history: PresenceHistoryRow[],
  audit: AuditRow[],
  outcome: ActionOutcome | undefined,
): Html {
  const p = d.presence;
  const id = encodeURIComponent(d.id);
  const actions: [string, string][] =
    d.status === 'revoked'
      ? []
      : d.status === 'suspended'
        ? [
            ['reinstate', 'Reinstate…'],
            ['revoke', 'Revoke…'],
            ['reset', 'Allow re-enrollment…'],
          ]
        : [
            ['suspend', 'Suspend…'],
            ['revoke', 'Revoke…'],
            ['reset', 'Allow re-enrollment…'],
          ];
  return html`${
    outcome
      ? html`<section class="notice" role="status" aria-live="polite" id="outcome" data-device="${d.id}"
        data-action="${outcome.action}" ${raw(outcome.at ? `data-since="${outcome.at.toISOString()}"` : '')}>
      <h2>Done: ${outcome.action}</h2>
      <p>${outcome.at ? html`Recorded at ${when(outcome.at, true)}${outcome.seq ? ` (change ${outcome.seq})` : ''} by ${outcome.by ?? ''}.` : ''}</p>
      <p>Live session: <strong data-live="session">${
        outcome.action === 'reset' || outcome.action === 'reinstate'
          ? `${outcome.action} does not close a live session`
          : 'waiting for the brokers to report…'
      }</strong></p></section>`
      : ''
  }
<dl class="facts">
  <dt>Status</dt><dd><span data-live="status">${badge(d.status)}</span>${d.revocationReason ? html` (${d.revocationReason})` : ''}${
    d.reenrollAllowed ? html` <span class="badge suspended">re-enrollment allowed</span>` : ''
  }</dd>
  <dt>Connection</dt><dd data-live="presence">${p ? connection(p) : html`<span class="badge offline">never seen</span>`}</dd>
  <dt>Product</dt><dd><a href="/devices${qs({ product: d.product })}">${d.product}</a></dd>
  <dt>Fleet</dt><dd><a href="/devices${qs({ fleet: d.fleet })}">${d.fleet}</a></dd>
  <dt>Enrolled</dt><dd>${when(d.createdAt)}${d.enrolledBy ? html` by station <a href="/stations/${d.enrolledBy}">${d.enrolledBy}</a>` : ''}</dd>
  ${d.revokedAt ? html`<dt>Revoked</dt><dd>${when(d.revokedAt)}</dd>` : ''}
</dl>
<section aria-labelledby="h-actions"><h2 id="h-actions">Actions</h2>${
    actions.length
      ? html`<p class="actions">${actions.map(
          ([a, label]) =>
            html`<a class="button${a === 'revoke' ? ' danger' : ''}" href="/devices/${id}/confirm${qs({ action: a })}">${label}</a> `,
        )}</p>`
      : html`<p class="muted">Revoked is final: this id is never issued again.</p>`
  }</section>
<section aria-labelledby="h-certs"><h2 id="h-certs">Certificates</h2><div class="scroll"><table class="list">
<thead><tr><th scope="col">Serial</th><th scope="col">Status</th><th scope="col">Valid from</th><th scope="col">Valid to</th><th scope="col">Superseded by</th></tr></thead>
<tbody>${d.certificates.map(
    (
      c: CertificateSummary,
    ) => html`<tr><td class="mono">${c.serial}</td><td>${badge(c.status)}${c.revocationReason ? ` (${c.revocationReason})` : ''}</td>
<td>${when(c.notBefore)}</td><td>${when(c.notAfter)}</td><td class="mono">${c.supersededBy ?? '—'}</td></tr>`,
  )}</tbody></table></div></section>
<section aria-labelledby="h-pres"><h2 id="h-pres">Connection history</h2><div class="scroll"><table class="list">
<thead><tr><th scope="col">Connected</th><th scope="col">Disconnected</th><th scope="col">Broker node</th><th scope="col">Address</th></tr></thead>
<tbody>${
    history.length
      ? history.map(
          (h) =>
            html`<tr><td>${when(h.connectedAt, true)}</td><td>${h.disconnectedAt ? when(h.disconnectedAt, true) : html`<span class="badge online">open</span>`}</td><td>${h.brokerNode ?? '—'}</td><td>${h.remoteAddress ?? '—'}</td></tr>`,
        )
      : html`<tr><td colspan="4" class="muted">No connection recorded.</td></tr>`
  }</tbody></table></div></section>
<section aria-labelledby="h-audit"><h2 id="h-audit">Audit trail</h2>${auditTable(audit)}
<p><a href="/audit${qs({ subject: `device:${d.id}` })}">The whole trail in the audit log</a></p></section>`;
}

export function auditTable(rows: AuditRow[]): Html {
  return html`<div class="scroll"><table class="list"><thead><tr><th scope="col">When</th><th scope="col">Actor</th><th scope="col">Action</th><th scope="col">Subject</th><th scope="col">Outcome</th><th scope="col">Details</th></tr></thead>
<tbody>${
    rows.length
      ? rows.map((a) => {
          const [kind, id] = (a.subject ?? '').split(':');
          const link =
            kind && id
              ? `/${kind === 'device' ? 'devices' : `${kind}s`}/${encodeURIComponent(id)}`
              : undefined;
          return html`<tr><td>${when(a.at)}</td><td>${a.actor}</td><td>${a.action}</td><td>${
            link ? html`<a href="${link}">${a.subject}</a>` : (a.subject ?? '—')
          }</td><td>${badge(a.outcome)}${a.count > 1 ? html` ×${a.count} until ${when(a.lastAt)}` : ''}</td><td class="mono small">${a.details ? JSON.stringify(a.details) : ''}</td></tr>`;
        })
      : html`<tr><td colspan="6" class="muted">Nothing recorded.</td></tr>`
  }</tbody></table></div>`;
}

// ------------------------------------------------------------------------------------------------ confirm

const reasonSelect = (current?: string) => html`<label for="c-reason">Reason (RFC 5280)</label>
<select id="c-reason" name="reason">${OPERATOR_REASONS.map(
  (r) => html`<option${raw(r === (current ?? 'unspecified') ? ' selected' : '')}>${r}</option>`,
)}</select>`;

export function confirmBody(o: {
  what: string;
  consequences: Html[];
  action: string;
  postTo: string;
  cancel: string;
  csrf: string;
  reason?: boolean;
  hidden?: Record<string, string>;
  extra?: Html;
}): Html {
  return html`<section class="confirm" aria-labelledby="h-confirm"><h2 id="h-confirm">${o.what}</h2>
<p>This will:</p><ul>${o.consequences.map((c) => html`<li>${c}</li>`)}</ul>${o.extra ?? ''}
<form method="post" action="${o.postTo}">
  <input type="hidden" name="_csrf" value="${o.csrf}">
  ${Object.entries(o.hidden ?? {}).map(([k, v]) => html`<input type="hidden" name="${k}" value="${v}">`)}
  ${o.reason ? html`<div class="field">${reasonSelect()}</div>` : ''}
  <p class="actions"><button type="submit" class="${o.action === 'revoke' ? 'danger' : ''}" autofocus>${o.what.replace(/\?$/, '')}</button>
  <a href="${o.cancel}">Cancel</a></p>
</form></section>`;
}

// ------------------------------------------------------------------------------------------------ principals

export function principalsBody(
  kind: 'station' | 'service' | 'operator',
  rows: PrincipalRow[],
  usage: Map<string, number>,
  next: string | undefined,
  extra?: Html,
): Html {
  const path = `${kind}s`;
  return html`<div class="scroll"><table class="list"><thead><tr><th scope="col">Id</th><th scope="col">Status</th>${
    kind === 'station'
      ? html`<th scope="col">Products (scope)</th><th scope="col" class="n">Hourly quota</th><th scope="col" class="n">Enrolled this hour</th>`
      : kind === 'service'
        ? html`<th scope="col">Role</th>`
        : ''
  }<th scope="col">Created</th></tr></thead><tbody>${
    rows.length
      ? rows.map(
          (p) =>
            html`<tr><th scope="row"><a href="/${path}/${encodeURIComponent(p.id)}">${p.id}</a></th><td>${badge(p.status)}</td>${
              kind === 'station'
                ? html`<td>${p.products?.length ? p.products.join(', ') : html`<span class="muted">none</span>`}</td>
                <td class="n">${p.hourlyQuota ?? 'unlimited'}</td><td class="n">${num(usage.get(p.id) ?? 0)}</td>`
                : kind === 'service'
                  ? html`<td>${p.role ?? '—'}</td>`
                  : ''
            }<td>${when(p.createdAt)}</td></tr>`,
        )
      : html`<tr><td colspan="6" class="muted">None.</td></tr>`
  }</tbody></table></div>
${next ? html`<p class="pager"><a rel="next" href="/${path}${qs({ cursor: next })}">Next page →</a></p>` : ''}${extra ?? ''}`;
}

export function principalBody(
  p: PrincipalRow,
  o: { usage?: number; enrolled?: number; audit: AuditRow[]; outcome?: Html },
): Html {
  const path = `${p.kind}s`;
  const id = encodeURIComponent(p.id);
  const actions: [string, string][] =
    p.status === 'revoked'
      ? []
      : [
          p.status === 'suspended' ? ['reinstate', 'Reinstate…'] : ['suspend', 'Suspend…'],
          ['revoke', p.kind === 'station' ? 'Revoke (and its devices)…' : 'Revoke…'],
        ];
  return html`${o.outcome ?? ''}<dl class="facts">
  <dt>Status</dt><dd>${badge(p.status)}${p.revocationReason ? ` (${p.revocationReason})` : ''}</dd>
  ${
    p.kind === 'station'
      ? html`<dt>Products</dt><dd>${p.products?.join(', ') || 'none'}</dd>
  <dt>Hourly quota</dt><dd>${p.hourlyQuota ?? 'unlimited'} (used this hour: ${num(o.usage ?? 0)})</dd>
  <dt>Devices enrolled</dt><dd><a href="/devices${qs({ station: p.id })}">${num(o.enrolled ?? 0)}</a></dd>`
      : ''
  }${p.kind === 'service' ? html`<dt>Role</dt><dd>${p.role ?? '—'}</dd>` : ''}
  <dt>Created</dt><dd>${when(p.createdAt)}</dd>
</dl>
<section aria-labelledby="h-actions"><h2 id="h-actions">Actions</h2>${
    actions.length
      ? html`<p class="actions">${actions.map(
          ([a, label]) =>
            html`<a class="button${a === 'revoke' ? ' danger' : ''}" href="/${path}/${id}/confirm${qs({ action: a })}">${label}</a> `,
        )}</p>`
      : html`<p class="muted">Revoked is final.</p>`
  }</section>
<section aria-labelledby="h-audit"><h2 id="h-audit">Audit trail</h2>${auditTable(o.audit)}</section>`;
}

export function sessionsTable(
  rows: {
    ref: string;
    operator: string;
    createdAt: Date;
    lastSeenAt: Date;
    expiresAt: Date;
    address: string | null;
    userAgent: string | null;
  }[],
  csrf: string,
  mine: string,
): Html {
  return html`<section aria-labelledby="h-sessions"><h2 id="h-sessions">Console sessions</h2><div class="scroll"><table class="list">
<thead><tr><th scope="col">Operator</th><th scope="col">Signed in</th><th scope="col">Last request</th><th scope="col">Ends</th><th scope="col">From</th><th scope="col"><span class="sr-only">Action</span></th></tr></thead>
<tbody>${rows.map(
    (
      s,
    ) => html`<tr><td>${s.operator}${s.ref === mine ? html` <span class="badge active">this session</span>` : ''}</td><td>${when(s.createdAt)}</td><td>${when(s.lastSeenAt)}</td><td>${when(s.expiresAt)}</td>
<td class="small">${s.address ?? '?'} <span class="muted">${s.userAgent ?? ''}</span></td>
<td><form method="post" action="/sessions/${s.ref}/revoke"><input type="hidden" name="_csrf" value="${csrf}"><button type="submit" class="small">End session<span class="sr-only"> of ${s.operator} from ${when(s.createdAt)}</span></button></form></td></tr>`,
  )}</tbody></table></div></section>`;
}

// ------------------------------------------------------------------------------------------------ audit, expiring

export function auditBody(
  f: Record<string, string | undefined>,
  rows: AuditRow[],
  next: string | undefined,
): Html {
  const field = (name: string, label: string, type = 'text', hint = '') =>
    html`<div><label for="a-${name}">${label}</label><input id="a-${name}" name="${name}" type="${type}" value="${f[name] ?? ''}"${raw(hint ? ` placeholder="${hint}"` : '')}></div>`;
  return html`<form class="filters" method="get" action="/audit" role="search" aria-label="Filter the audit log">
${field('actor', 'Actor', 'text', 'operator:admin')}${field('subject', 'Subject', 'text', 'device:dev-1')}${field('action', 'Action', 'text', 'subject.revoke')}
${field('from', 'From (UTC)', 'datetime-local')}${field('to', 'To (UTC)', 'datetime-local')}
<div class="go"><button type="submit">Filter</button> <a href="/audit">Clear</a></div></form>
${auditTable(rows)}
${next ? html`<p class="pager"><a rel="next" href="/audit${qs({ ...f, cursor: next })}">Older →</a></p>` : ''}`;
}

export function expiringBody(
  days: number,
  rows: CertificateSummary[],
  next: string | undefined,
  total: number,
): Html {
  return html`<form class="filters" method="get" action="/expiring" aria-label="Expiry window">
<div><label for="e-days">Expiring within (days)</label><input id="e-days" name="days" type="number" min="0" max="36500" value="${days}"></div>
<div class="go"><button type="submit">Show</button> <a class="button" href="/expiring.csv${qs({ days })}" download>Export CSV</a></div></form>
<p><strong>${num(total)}</strong> active certificate${total === 1 ? '' : 's'} expire within ${days} days (expired ones included), soonest first.</p>
<div class="scroll"><table class="list"><thead><tr><th scope="col">Subject</th><th scope="col">Serial</th><th scope="col">Expires</th><th scope="col" class="n">Days left</th><th scope="col">Issuer</th></tr></thead>
<tbody>${
    rows.length
      ? rows.map((c) => {
          const left = Math.floor((c.notAfter.getTime() - Date.now()) / 86_400_000);
          const path = c.subjectKind === 'device' ? 'devices' : `${c.subjectKind}s`;
          return html`<tr><td><a href="/${path}/${encodeURIComponent(c.subjectId)}">${c.subjectKind}:${c.subjectId}</a></td><td class="mono">${c.serial}</td><td>${when(c.notAfter)}</td><td class="n${left < 0 ? ' warn' : ''}">${num(left)}</td><td>${c.issuerCa}</td></tr>`;
        })
      : html`<tr><td colspan="5" class="muted">Nothing expires in this window.</td></tr>`
  }</tbody></table></div>
${next ? html`<p class="pager"><a rel="next" href="/expiring${qs({ days, cursor: next })}">Next page →</a></p>` : ''}`;
}

export function messageBody(message: string, hint?: Html): Html {
  return html`<p class="error" role="alert">${message}</p>${hint ?? ''}`;
}
