/**
 * Topic policy: rules as data, compiled once, evaluated by pure functions.
 *
 * A document has `rules`, each with a `kind` (device | service), `actions` (publish | subscribe), topic
 * filters with placeholders (`${id}`, `${fleet}`, `${product}`, `${role}`), an optional `effect`
 * (allow | deny, default allow) and an optional `roles` list. Deny by default; the first matching rule decides.
 *
 * - Placeholders are filled strictly (EMQX's rule): a missing value, or one that is not a valid id (so it
 *   could contain '+', '#', '/', NUL, control characters or be empty), makes the rule not match.
 * - A subscription filter is allowed only if every topic it can match is allowed: the filter must be
 *   included in an allow rule's pattern, and must not intersect any deny rule listed before it.
 * - [MQTT-4.7.2-1]: a filter starting with a wildcard does not match topics starting with '$'. Nothing under
 *   `$SYS` is ever allowed, whatever the rules say.
 */
import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { type IdentityKind, isValidId } from '../pki/ids.ts';
import { BrokerError, PolicyError } from './errors.ts';

export const POLICY_KINDS = ['device', 'service'] as const;
export type PolicyKind = (typeof POLICY_KINDS)[number];
export const POLICY_ACTIONS = ['publish', 'subscribe'] as const;
export type PolicyAction = (typeof POLICY_ACTIONS)[number];
export const PLACEHOLDERS = ['id', 'fleet', 'product', 'role'] as const;
export type Placeholder = (typeof PLACEHOLDERS)[number];
export type PolicyEffect = 'allow' | 'deny';

/** What a rule is evaluated against: the connection's identity, derived once at CONNECT. */
export interface PolicyContext {
  readonly kind: IdentityKind;
  readonly id: string;
  readonly fleet?: string | undefined;
  readonly product?: string | undefined;
  readonly role?: string | undefined;
}

/** The document as written (JSON or YAML). */
export interface PolicyRuleDoc {
  kind: PolicyKind | PolicyKind[];
  effect?: PolicyEffect;
  actions?: PolicyAction[];
  action?: PolicyAction;
  topics?: string[];
  topic?: string;
  roles?: string[];
}
export interface PolicyDoc {
  version?: 1;
  rules: PolicyRuleDoc[];
}

/** A level of a compiled pattern: a literal, a wildcard, or a template with placeholders. */
type Level = string | { readonly parts: readonly (string | { readonly ph: Placeholder })[] };

interface CompiledPattern {
  readonly source: string;
  readonly levels: readonly Level[];
}

export interface CompiledRule {
  /** Position in the document, for logs: `rules[3]`. */
  readonly position: string;
  readonly kinds: ReadonlySet<PolicyKind>;
  readonly effect: PolicyEffect;
  readonly actions: ReadonlySet<PolicyAction>;
  readonly roles: ReadonlySet<string> | undefined;
  readonly patterns: readonly CompiledPattern[];
}

/** A compiled, frozen policy. Make one with compilePolicy(). */
export interface Policy {
  readonly rules: readonly CompiledRule[];
}

export const MAX_TOPIC_BYTES = 65535;
const SYS_PREFIX = '$SYS';

// ---------------------------------------------------------------------------------------------------------
// Topic syntax

/** Why `topic` is not a valid PUBLISH topic name, or undefined when it is ([MQTT-4.7.3], [MQTT-3.3.2-2]). */
export function topicNameProblem(topic: unknown): string | undefined {
  const base = stringProblem(topic);
  if (base) return base;
  const t = topic as string;
  if (t.includes('+') || t.includes('#')) return 'wildcards are not allowed in a topic name';
  return undefined;
}

/** Why `filter` is not a valid SUBSCRIBE topic filter, or undefined when it is ([MQTT-4.7.1]). */
export function topicFilterProblem(filter: unknown): string | undefined {
  const base = stringProblem(filter);
  if (base) return base;
  const levels = (filter as string).split('/');
  for (let i = 0; i < levels.length; i++) {
    const l = levels[i]!;
    if (l.includes('#') && (l !== '#' || i !== levels.length - 1)) {
      return "'#' must be the last level and alone in it";
    }
    if (l.includes('+') && l !== '+') return "'+' must be alone in its level";
  }
  return undefined;
}

function stringProblem(t: unknown): string | undefined {
  if (typeof t !== 'string') return 'topic is not a string';
  if (t.length === 0) return 'topic is empty'; // [MQTT-4.7.3-1]
  if (t.includes('\u0000')) return 'topic contains NUL'; // [MQTT-4.7.3-2]
  if (t.length * 3 > MAX_TOPIC_BYTES && Buffer.byteLength(t, 'utf8') > MAX_TOPIC_BYTES) {
    return `topic is longer than ${MAX_TOPIC_BYTES} bytes`; // [MQTT-4.7.3-3]
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------
// Compile

const RULE_KEYS = new Set(['kind', 'effect', 'actions', 'action', 'topics', 'topic', 'roles']);
const PLACEHOLDER_RE = /\$\{([^}]*)\}/g;

/** Validates a policy document once; throws PolicyError naming the position of the first problem. */
export function compilePolicy(doc: unknown): Policy {
  if (!isObject(doc)) throw new PolicyError('(root)', 'the policy must be an object with `rules`');
  for (const key of Object.keys(doc)) {
    if (key !== 'version' && key !== 'rules') throw new PolicyError(key, 'unknown key');
  }
  if (doc.version !== undefined && doc.version !== 1) throw new PolicyError('version', 'must be 1');
  if (!Array.isArray(doc.rules)) throw new PolicyError('rules', 'must be a list');
  const rules = doc.rules.map((r, i) => compileRule(r, `rules[${i}]`));
  return Object.freeze({ rules: Object.freeze(rules) });
}

function compileRule(raw: unknown, pos: string): CompiledRule {
  if (!isObject(raw)) throw new PolicyError(pos, 'a rule must be an object');
  for (const key of Object.keys(raw)) {
    if (!RULE_KEYS.has(key)) throw new PolicyError(`${pos}.${key}`, 'unknown key');
  }
  const kinds = new Set<PolicyKind>();
  const kindList = Array.isArray(raw.kind) ? raw.kind : [raw.kind];
  if (kindList.length === 0) throw new PolicyError(`${pos}.kind`, 'at least one kind is required');
  kindList.forEach((k, i) => {
    const at = Array.isArray(raw.kind) ? `${pos}.kind[${i}]` : `${pos}.kind`;
    if (k === 'station' || k === 'operator') {
      throw new PolicyError(at, `${k} identities have no MQTT access; only device and service rules exist`);
    }
    if (!POLICY_KINDS.includes(k as PolicyKind)) {
      throw new PolicyError(at, `unknown kind ${JSON.stringify(k)} (expected ${POLICY_KINDS.join(' or ')})`);
    }
    kinds.add(k as PolicyKind);
  });

  const effect = raw.effect ?? 'allow';
  if (effect !== 'allow' && effect !== 'deny') {
    throw new PolicyError(`${pos}.effect`, 'must be allow or deny');
  }

  if (raw.action !== undefined && raw.actions !== undefined) {
    throw new PolicyError(`${pos}.actions`, 'give either action or actions, not both');
  }
  const actionsKey = raw.actions !== undefined ? 'actions' : 'action';
  const actionList = raw.actions !== undefined ? raw.actions : raw.action !== undefined ? [raw.action] : [];
  if (!Array.isArray(actionList) || actionList.length === 0) {
    throw new PolicyError(`${pos}.${actionsKey}`, 'at least one action (publish, subscribe) is required');
  }
  const actions = new Set<PolicyAction>();
  actionList.forEach((a, i) => {
    const at = actionsKey === 'actions' ? `${pos}.actions[${i}]` : `${pos}.action`;
    if (!POLICY_ACTIONS.includes(a as PolicyAction)) {
      throw new PolicyError(at, `unknown action ${JSON.stringify(a)} (expected publish or subscribe)`);
    }
    actions.add(a as PolicyAction);
  });

  let roles: Set<string> | undefined;
  if (raw.roles !== undefined) {
    if (!Array.isArray(raw.roles) || raw.roles.length === 0) {
      throw new PolicyError(`${pos}.roles`, 'must be a non-empty list of role names');
    }
    roles = new Set();
    raw.roles.forEach((r, i) => {
      if (!isValidId(r)) throw new PolicyError(`${pos}.roles[${i}]`, 'not a valid role name');
      roles!.add(r);
    });
  }

  if (raw.topic !== undefined && raw.topics !== undefined) {
    throw new PolicyError(`${pos}.topics`, 'give either topic or topics, not both');
  }
  const single = raw.topics === undefined;
  const topicList = single ? [raw.topic] : raw.topics;
  if (!Array.isArray(topicList) || topicList.length === 0 || topicList[0] === undefined) {
    throw new PolicyError(`${pos}.${single ? 'topic' : 'topics'}`, 'at least one topic filter is required');
  }
  const patterns = topicList.map((t, i) =>
    compilePattern(t, single ? `${pos}.topic` : `${pos}.topics[${i}]`),
  );

  return Object.freeze({ position: pos, kinds, effect, actions, roles, patterns: Object.freeze(patterns) });
}

function compilePattern(raw: unknown, pos: string): CompiledPattern {
  if (typeof raw !== 'string') throw new PolicyError(pos, 'a topic filter must be a string');
  // Check the filter's shape with every placeholder replaced by a plain level-safe word.
  const probe = raw.replace(PLACEHOLDER_RE, 'x');
  const problem = topicFilterProblem(probe);
  if (problem) throw new PolicyError(pos, problem);
  if (/[\u0001-\u001f\u007f]/.test(raw)) throw new PolicyError(pos, 'contains a control character');
  if (probe.split('/')[0]!.startsWith(SYS_PREFIX)) {
    throw new PolicyError(pos, '$SYS is reserved for the broker');
  }
  const levels = raw.split('/').map((level): Level => {
    if (!level.includes('$')) return level;
    const parts: (string | { ph: Placeholder })[] = [];
    let last = 0;
    for (const m of level.matchAll(PLACEHOLDER_RE)) {
      const name = m[1]!;
      if (!PLACEHOLDERS.includes(name as Placeholder)) {
        throw new PolicyError(pos, `unknown placeholder \${${name}} (expected ${PLACEHOLDERS.join(', ')})`);
      }
      if (m.index! > last) parts.push(level.slice(last, m.index));
      parts.push({ ph: name as Placeholder });
      last = m.index! + m[0].length;
    }
    if (last < level.length) parts.push(level.slice(last));
    if (parts.length === 1 && typeof parts[0] === 'string') return parts[0];
    // A '${' left over is a placeholder that never closed.
    for (const p of parts) {
      if (typeof p === 'string' && p.includes('${')) throw new PolicyError(pos, 'unterminated placeholder');
    }
    return Object.freeze({ parts: Object.freeze(parts) });
  });
  for (const level of levels) {
    if (typeof level === 'string' && level.includes('${'))
      throw new PolicyError(pos, 'unterminated placeholder');
  }
  return Object.freeze({ source: raw, levels: Object.freeze(levels) });
}

// ---------------------------------------------------------------------------------------------------------
// Load

/** The default policy shipped in the repo (design.md's topic tree). */
export const DEFAULT_POLICY_PATH = fileURLToPath(new URL('./default-policy.yaml', import.meta.url));

/** Reads a JSON (.json) or YAML (.yaml/.yml) policy file and compiles it. */
export function loadPolicyFile(path: string = DEFAULT_POLICY_PATH): Policy {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (cause) {
    throw new BrokerError('BROKER_POLICY_UNREADABLE', `cannot read policy file ${path}`, { cause });
  }
  let doc: unknown;
  try {
    doc = extname(path).toLowerCase() === '.json' ? JSON.parse(text) : parseYaml(text);
  } catch (cause) {
    throw new BrokerError('BROKER_POLICY_UNREADABLE', `policy file ${path} is not valid JSON/YAML`, {
      cause,
      details: { path },
    });
  }
  return compilePolicy(doc);
}

// ---------------------------------------------------------------------------------------------------------
// Bind: substitute a connection's placeholders once, and build its checker

/** A per-connection checker with the placeholders already filled. Pure; safe to keep for a connection. */
export interface BoundPolicy {
  readonly ctx: PolicyContext;
  canPublish(topic: string): boolean;
  canSubscribe(filter: string): boolean;
}

interface Entry {
  readonly order: number;
  readonly effect: PolicyEffect;
  readonly levels: readonly string[];
}

/** A publish trie node; `end`/`hash` hold the lowest rule order whose pattern ends here / has '#' here. */
interface Node {
  lit: Map<string, Node> | undefined;
  plus: Node | undefined;
  end: number;
  hash: number;
}

const NONE = Number.MAX_SAFE_INTEGER;
const PUBLISH_CACHE_MAX = 1024;
const DENY_ALL: Omit<BoundPolicy, 'ctx'> = { canPublish: () => false, canSubscribe: () => false };

export function bindPolicy(policy: Policy, ctx: PolicyContext): BoundPolicy {
  const kind = ctx.kind as PolicyKind;
  if (!POLICY_KINDS.includes(kind) || !isValidId(ctx.id)) return { ctx, ...DENY_ALL };
  const pub: Entry[] = [];
  const sub: Entry[] = [];
  let order = 0;
  for (const rule of policy.rules) {
    if (!rule.kinds.has(kind)) continue;
    if (rule.roles && !(ctx.role !== undefined && rule.roles.has(ctx.role))) continue;
    for (const p of rule.patterns) {
      const levels = substitute(p, ctx);
      order++;
      if (!levels) continue; // a placeholder without a safe value: the rule does not match
      const e: Entry = { order, effect: rule.effect, levels };
      if (rule.actions.has('publish')) pub.push(e);
      if (rule.actions.has('subscribe')) sub.push(e);
    }
  }
  const trie = buildTrie(pub);
  const effects: PolicyEffect[] = [];
  for (const e of pub) effects[e.order] = e.effect;
  const cache = new Map<string, boolean>();

  return {
    ctx,
    canPublish(topic: string): boolean {
      const hit = cache.get(topic);
      if (hit !== undefined) return hit;
      let ok = false;
      if (topicNameProblem(topic) === undefined && !isSys(topic)) {
        const best = matchTrie(trie, topic.split('/'), 0, topic.charCodeAt(0) === 36);
        ok = best !== NONE && effects[best] === 'allow';
      }
      if (cache.size >= PUBLISH_CACHE_MAX) cache.clear();
      cache.set(topic, ok);
      return ok;
    },
    canSubscribe(filter: string): boolean {
      if (topicFilterProblem(filter) !== undefined || isSys(filter)) return false;
      const f = filter.split('/');
      for (const e of sub) {
        if (e.effect === 'deny') {
          if (intersects(f, e.levels)) return false;
        } else if (covers(e.levels, f)) {
          return true;
        }
      }
      return false;
    },
  };
}

/** Pure check: may `ctx` publish to `topic`? For the hot path keep a bindPolicy() result per connection. */
export function canPublish(policy: Policy, ctx: PolicyContext, topic: string): boolean {
  return bindPolicy(policy, ctx).canPublish(topic);
}

/** Pure check: may `ctx` subscribe to `filter` (every topic it can match must be allowed)? */
export function canSubscribe(policy: Policy, ctx: PolicyContext, filter: string): boolean {
  return bindPolicy(policy, ctx).canSubscribe(filter);
}

function isSys(t: string): boolean {
  return t === SYS_PREFIX || t.startsWith(`${SYS_PREFIX}/`);
}

function substitute(p: CompiledPattern, ctx: PolicyContext): string[] | undefined {
  const out: string[] = [];
  for (const level of p.levels) {
    if (typeof level === 'string') {
      out.push(level);
      continue;
    }
    let s = '';
    for (const part of level.parts) {
      if (typeof part === 'string') {
        s += part;
        continue;
      }
      const v = ctx[part.ph];
      // Strict: ids never contain '/', '+', '#', '$', NUL, control characters, and are never empty.
      if (!isValidId(v)) return undefined;
      s += v;
    }
    out.push(s);
  }
  return out;
}

function newNode(): Node {
  return { lit: undefined, plus: undefined, end: NONE, hash: NONE };
}

function buildTrie(entries: readonly Entry[]): Node {
  const root = newNode();
  for (const e of entries) {
    let n = root;
    for (const level of e.levels) {
      if (level === '#') {
        n.hash = Math.min(n.hash, e.order);
        n = undefined as unknown as Node;
        break;
      }
      if (level === '+') {
        n.plus ??= newNode();
        n = n.plus;
      } else {
        n.lit ??= new Map();
        let next = n.lit.get(level);
        if (!next) {
          next = newNode();
          n.lit.set(level, next);
        }
        n = next;
      }
    }
    if (n) n.end = Math.min(n.end, e.order);
  }
  return root;
}

/** Lowest rule order whose pattern matches topic levels t[i..]; `dollar` blocks top-level wildcards. */
function matchTrie(n: Node, t: readonly string[], i: number, dollar: boolean): number {
  const top = i === 0 && dollar; // [MQTT-4.7.2-1]
  let best = top ? NONE : n.hash; // '#' also matches the parent level: `a/#` matches `a`
  if (i === t.length) return Math.min(best, n.end);
  const lit = n.lit?.get(t[i]!);
  if (lit) best = Math.min(best, matchTrie(lit, t, i + 1, dollar));
  if (n.plus && !top) best = Math.min(best, matchTrie(n.plus, t, i + 1, dollar));
  return best;
}

/**
 * Does pattern `p` cover filter `f`: does every topic matching `f` also match `p`? Both are valid filters.
 * Linear in the number of levels: at each level the answer is forced.
 */
export function covers(p: readonly string[], f: readonly string[]): boolean {
  let i = 0;
  for (; i < p.length; i++) {
    const pl = p[i]!;
    if (pl === '#') {
      // `#` matches the rest, including nothing; at the top level it does not match '$' topics, so f must
      // not be able to produce one (a literal '$…' first level).
      return !(i === 0 && f.length > 0 && f[0] !== '+' && f[0] !== '#' && f[0]!.startsWith('$'));
    }
    if (i >= f.length) return false; // f ends here, p needs more levels
    const fl = f[i]!;
    if (fl === '#') {
      // f reaches every suffix from here: of any length, or at least one level at the top (no topic is
      // empty). Only '#', or '+/#' at the top level, covers that.
      return i === 0 && pl === '+' && p.length === 2 && p[1] === '#';
    }
    if (pl === '+') {
      if (i === 0 && fl !== '+' && fl.startsWith('$')) return false; // [MQTT-4.7.2-1]
      continue;
    }
    if (fl === '+' || fl !== pl) return false; // f reaches values other than the literal
  }
  return i === f.length;
}

/** Is there a topic matched by both filters `a` and `b`? */
export function intersects(a: readonly string[], b: readonly string[]): boolean {
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i];
    const y = b[i];
    if (x === '#' || y === '#') {
      // The other side can still produce a topic here unless the '#' is at the top and the other is '$…'.
      if (i === 0) {
        const other = x === '#' ? y : x;
        if (other !== undefined && other !== '#' && other !== '+' && other.startsWith('$')) return false;
      }
      // If the other side has ended, the only common topic is the first i levels: `/#` and `+` share only
      // the empty topic, which no one can publish [MQTT-4.7.3-1].
      if (i === 1 && (x === undefined || y === undefined) && (a[0] === '' || b[0] === '')) return false;
      return true;
    }
    if (x === undefined || y === undefined) return false; // different lengths with no '#'
    if (x === '+' || y === '+') {
      if (i === 0) {
        const other = x === '+' ? y : x;
        if (other !== '+' && other.startsWith('$')) return false; // [MQTT-4.7.2-1]
      }
      continue;
    }
    if (x !== y) return false;
  }
  return true;
}

function isObject(v: unknown): v is Record<string, unknown> & { rules?: unknown; version?: unknown } {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
