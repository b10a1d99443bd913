/**
 * Server-rendered HTML: a tagged template that escapes every interpolated value unless it is already
 * `Html` (made by this template or `raw`), so no registry value (an id, an audit detail, a user agent) is
 * ever written into a page unescaped.
 */
export class Html {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

const ESC: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(v: unknown): string {
  return String(v).replace(/[&<>"']/g, (c) => ESC[c]!);
}

type Part = Html | string | number | boolean | null | undefined | Date | Part[];

function render(v: Part): string {
  if (v === null || v === undefined || v === false) return '';
  if (v instanceof Html) return v.value;
  if (Array.isArray(v)) return v.map(render).join('');
  if (v instanceof Date) return escapeHtml(v.toISOString());
  return escapeHtml(v);
}

export function html(strings: TemplateStringsArray, ...values: Part[]): Html {
  let out = strings[0]!;
  for (let i = 0; i < values.length; i++) out += render(values[i]!) + strings[i + 1]!;
  return new Html(out);
}

/** Trusted markup (constants only). */
export const raw = (s: string) => new Html(s);

/** A time for people: UTC, to the second (milliseconds where they matter). */
export function when(d: Date | string | null | undefined, ms = false): Html {
  if (!d) return html`<span class="muted">—</span>`;
  const t = typeof d === 'string' ? new Date(d) : d;
  const iso = t.toISOString();
  const text = `${iso.slice(0, 10)} ${iso.slice(11, ms ? 23 : 19)} UTC`;
  return html`<time datetime="${iso}">${text}</time>`;
}

export const num = (n: number) => n.toLocaleString('en-US');

/** A query string from the defined values. */
export function qs(params: Record<string, string | number | boolean | undefined | null>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params))
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
}
