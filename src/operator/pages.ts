/**
 * The dashboard's pages, rendered on the server with hono's `html` template (the same escaping as
 * hono/jsx: every interpolated value is escaped for text and for quoted attributes). Agents,
 * platforms and tool servers choose much of what is shown: every such value goes in as a plain
 * string through `s()`, never as markup, and URLs carry them only percent-encoded. The only raw
 * HTML is this file's own literal markup. No script is served at all (the CSP forbids any).
 *
 * Deliberately left out: client-side behaviour (every action is a form POST with the session's
 * CSRF token) and anything secret (the service redacts; no token or config value is rendered).
 */
import { html } from 'hono/html';
import type { HtmlEscapedString } from 'hono/utils/html';
import type { PendingApproval } from '../governance/approvals.js';
import type { AuditRow, AuditVerifyResult } from '../governance/audit.js';
import type { PinView } from '../governance/mcp-pins.js';
import type { ConversationSummary, EventSummary } from '../store/operator.js';
import type { AgentView, FeedbackView, TranscriptItem } from './service.js';

type Html = HtmlEscapedString | Promise<HtmlEscapedString>;

/** Any value as text: objects never reach the template (an object claiming to be markup would pass unescaped). */
export const s = (v: unknown): string => (v === null || v === undefined ? '' : typeof v === 'string' ? v : typeof v === 'number' || typeof v === 'boolean' ? String(v) : JSON.stringify(v) ?? '');
const when = (at: string | null | undefined) => (at ? s(at).replace('T', ' ').replace(/\.\d+(Z|\+00:00)$/, 'Z') : '—');
const q = (params: Record<string, string | number | undefined>) =>
  Object.entries(params)
    .filter(([, v]) => v !== undefined && v !== '')
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
    .join('&');

const CSS = `
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}
header{background:#1f2937;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center}
header a{color:#e5e7eb;text-decoration:none}header a.on{color:#fff;font-weight:600;text-decoration:underline}
header form{margin-left:auto}main{padding:16px}
table{border-collapse:collapse;background:#fff;width:100%;margin-bottom:16px}
th,td{border:1px solid #d8dde3;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f4}td.num{text-align:right}pre{margin:0;white-space:pre-wrap;word-break:break-word}
.ok{color:#166534}.bad{color:#b91c1c}.muted{color:#6b7280}.add{color:#166534}.del{color:#b91c1c}
form.inline{display:inline}button{cursor:pointer}.entry{background:#fff;border:1px solid #d8dde3;margin:4px 0;padding:6px}
.k-prompt{border-left:4px solid #2563eb}.k-reply{border-left:4px solid #16a34a}.k-notice{border-left:4px solid #dc2626}
.k-audit{border-left:4px solid #9333ea}.k-progress,.k-file{border-left:4px solid #9ca3af}
`;

const TABS: Array<[string, string]> = [
  ['agents', 'Agents'],
  ['conversations', 'Conversations'],
  ['approvals', 'Approvals'],
  ['pins', 'Tool pins'],
  ['audit', 'Audit'],
  ['egress', 'Egress'],
  ['feedback', 'Feedback'],
];

export interface PageContext {
  csrf: string;
  tab: string;
  /** A one-line result of the last action (from the redirect), shown at the top. */
  flash?: string | undefined;
}

/** A POST form carrying the CSRF token; `fields` become hidden inputs. */
function post(ctx: PageContext, action: string, label: string, fields: Record<string, string> = {}, name?: string): Html {
  return html`<form class="inline" method="post" action="${action}"><input type="hidden" name="csrf" value="${ctx.csrf}">${Object.entries(fields).map(
    ([k, v]) => html`<input type="hidden" name="${k}" value="${v}">`,
  )}<button type="submit"${name ? html` name="op" value="${name}"` : ''}>${label}</button></form>`;
}

export function layout(ctx: PageContext, title: string, body: Html): Html {
  return html`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${title} · agent-vm</title><style>${CSS}</style></head>
<body><header><strong>agent-vm</strong>${TABS.map(([id, label]) => html`<a href="/ui/${id}"${id === ctx.tab ? html` class="on"` : ''}>${label}</a>`)}
${post(ctx, '/ui/logout', 'Log out')}</header><main><h1>${title}</h1>${ctx.flash ? html`<p class="flash" role="status">${ctx.flash}</p>` : ''}${body}</main></body></html>`;
}

export function loginPage(error?: string): Html {
  return html`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Log in · agent-vm</title><style>${CSS}</style></head>
<body><main><h1>agent-vm operator login</h1>${error ? html`<p class="bad" role="alert">${error}</p>` : ''}
<form method="post" action="/ui/login"><label>Admin token (AGENTVM_ADMIN_TOKEN) <input type="password" name="token" autocomplete="current-password" required></label>
<button type="submit">Log in</button></form></main></body></html>`;
}

export function agentsPage(ctx: PageContext, agents: AgentView[]): Html {
  const rows = agents.map(
    (a) => html`<tr data-agent="${a.id}"><td><strong>${a.id}</strong><br><span class="muted">${a.name ?? ''}</span></td>
<td class="state">${a.state}</td><td class="sandbox">${a.sandbox}</td><td>${a.runtime ?? '—'}${a.engineRuntime && a.engineRuntime !== a.runtime ? html` (${a.engineRuntime})` : ''}<br><span class="muted">asks ${a.runtimeSetting ?? '—'}</span></td>
<td>${a.risk ?? '—'}</td><td>${a.image ?? '—'}<br><span class="muted">${a.specHash ? a.specHash.slice(0, 12) : ''}</span></td>
<td>${a.lastTurn ? html`<a href="/ui/conversations/view?${q({ id: a.lastTurn.conversation })}">${a.lastTurn.status}</a><br><span class="muted">${when(a.lastTurn.at)}</span>` : '—'}</td>
<td class="wakes">${a.wakes.length === 0 ? '—' : a.wakes.slice(0, 5).map((w) => html`${w.wakeMs ?? '?'} ms ${w.restored ? 'restored' : (w.action ?? '')}<br>`)}</td>
<td class="snapshots">${
      a.generations.length > 0
        ? a.generations.slice(0, 5).map((g) => (g.error ? html`#${g.generation} <span class="bad">unreadable</span><br>` : html`#${g.generation} ${when(g.at)} ${g.bytes ?? '?'} B${g.reason ? ` (${g.reason})` : ''}<br>`))
        : a.snapshots.length === 0
          ? '—'
          : a.snapshots.slice(0, 3).map((x) => html`${when(x.at)} ${x.bytes ?? '?'} B (${x.by})<br>`)
    }</td>
<td>${a.healing.length === 0 ? html`<span class="muted">none</span>` : a.healing.map((h) => html`${when(h.at)} ${h.level}${h.reason ? html` <span class="muted">(${h.reason})</span>` : ''}<br>`)}</td>
<td>${a.served ? html`${post(ctx, `/ui/agents/${encodeURIComponent(a.id)}`, 'Wake', {}, 'wake')} ${post(ctx, `/ui/agents/${encodeURIComponent(a.id)}`, 'Sleep', {}, 'sleep')} ` : html`<span class="muted">unit elsewhere</span> `}${post(ctx, `/ui/agents/${encodeURIComponent(a.id)}`, 'Snapshot', {}, 'snapshot')}</td></tr>`,
  );
  return layout(
    ctx,
    'Agents',
    html`<table><thead><tr><th>Agent</th><th>Recorded</th><th>Sandbox</th><th>Runtime used</th><th>Risk</th><th>Image / spec</th><th>Last turn</th><th>Wake latency (newest first)</th><th>Snapshot generations</th><th>Self-healing</th><th>Actions</th></tr></thead>
<tbody>${rows}</tbody></table>`,
  );
}

export function conversationsPage(ctx: PageContext, list: ConversationSummary[], profile: string | undefined): Html {
  return layout(
    ctx,
    'Conversations',
    html`<form method="get" action="/ui/conversations"><label>Profile <input name="profile" value="${profile ?? ''}"></label> <button type="submit">Filter</button></form>
<table><thead><tr><th>Conversation</th><th>Profile</th><th>Platform</th><th>Turns</th><th>Last status</th><th>Last activity</th></tr></thead><tbody>
${list.map((c) => html`<tr><td><a href="/ui/conversations/view?${q({ id: c.conversation })}">${c.conversation}</a></td><td>${c.profile ?? '—'}</td><td>${c.platform}</td><td class="num">${c.events}</td><td>${c.lastStatus}</td><td>${when(c.lastAt.toISOString())}</td></tr>`)}
</tbody></table>`,
  );
}

function itemHtml(i: TranscriptItem): Html {
  if (i.type === 'audit') {
    return html`<div class="entry k-audit"><span class="muted">${when(i.at)}</span> <strong>${i.action}</strong> <span class="${i.decision === 'allow' || i.decision === 'approved' || i.decision === 'ok' ? 'ok' : 'bad'}">${i.decision}</span> ${i.subject ?? ''} ${i.reason ? html`<span class="muted">(${i.reason})</span>` : ''}</div>`;
  }
  const size = i.kind === 'file' ? (i.meta as { size?: unknown } | null)?.size : undefined;
  return html`<div class="entry k-${s(i.kind)}"><span class="muted">${when(i.at)}</span> <strong>${i.kind}</strong>${size !== undefined ? html` <span class="muted">${s(size)} bytes</span>` : ''}<pre>${i.text}</pre></div>`;
}

/** A turn's ratings in one cell: "👍 2 · 👎 1", or nothing. */
function ratings(rows: FeedbackView[]): string {
  const up = rows.filter((r) => r.value === 'positive').length;
  const down = rows.length - up;
  return rows.length === 0 ? '' : `👍 ${up} · 👎 ${down}`;
}

export function transcriptPage(ctx: PageContext, c: { conversation: string; events: EventSummary[]; items: TranscriptItem[]; feedback: FeedbackView[] }): Html {
  return layout(
    ctx,
    'Conversation',
    html`<p><strong>${c.conversation}</strong></p>
<table><thead><tr><th>Event</th><th>Status</th><th>Attempts</th><th>Error</th><th>Updated</th><th>Feedback</th></tr></thead><tbody>
${c.events.map((e) => html`<tr><td>${e.id}</td><td>${e.status}</td><td class="num">${e.attempts}</td><td>${e.error ?? ''}</td><td>${when(e.updatedAt.toISOString())}</td><td>${ratings(c.feedback.filter((f) => f.eventId === e.id))}</td></tr>`)}</tbody></table>
<h2>Transcript and tool calls</h2>${c.items.map(itemHtml)}`,
  );
}

export function approvalsPage(ctx: PageContext, pending: PendingApproval[]): Html {
  return layout(
    ctx,
    'Approvals',
    pending.length === 0
      ? html`<p>No tool call is waiting for a person.</p>`
      : html`<table><thead><tr><th>Profile</th><th>Tool</th><th>Arguments (hash)</th><th>Approvers</th><th>Expires</th><th>Decide</th></tr></thead><tbody>
${pending.map(
  (p) => html`<tr data-approval="${p.id}"><td>${p.profile}</td><td>${p.tool}</td><td><code>${p.argsHash.slice(0, 16)}</code></td><td>${p.approvers.join(', ') || 'operator only'}</td><td>${when(p.expiresAt.toISOString())}</td>
<td>${post(ctx, `/ui/approvals/${encodeURIComponent(p.id)}`, 'Approve', { decision: 'approved' })} ${post(ctx, `/ui/approvals/${encodeURIComponent(p.id)}`, 'Deny', { decision: 'denied' })}</td></tr>`,
)}</tbody></table>`,
  );
}

export function pinsPage(ctx: PageContext, pins: PinView[]): Html {
  const quarantined = pins.filter((p) => p.state === 'quarantined');
  return layout(
    ctx,
    'Tool pins',
    html`<h2>Quarantined (hidden and denied until re-pinned)</h2>${
      quarantined.length === 0
        ? html`<p>None.</p>`
        : quarantined.map(
            (p) => html`<div class="entry" data-pin="${`${p.profile}/${p.tool}`}"><strong>${p.profile}</strong> ${p.tool}: pinned <code>${p.hash.slice(0, 12)}</code>, seen <code>${p.seen?.hash.slice(0, 12) ?? ''}</code> at ${when(p.seen?.at)}
<pre class="diff">${p.diff.length === 0 ? html`<span class="muted">(the pinned definition predates stored definitions: no diff)</span>` : p.diff.map((l) => html`<span class="${l.startsWith('+') ? 'add' : l.startsWith('-') ? 'del' : ''}">${l}</span>\n`)}</pre>
${post(ctx, '/ui/pins/repin', 'Re-pin this definition', { profile: p.profile, tool: p.tool, expect: p.seen?.hash ?? '' })}</div>`,
          )
    }
<h2>All pins</h2><table><thead><tr><th>Profile</th><th>Tool</th><th>State</th><th>Hash</th><th>Pinned at</th><th>By</th></tr></thead><tbody>
${pins.map((p) => html`<tr><td>${p.profile}</td><td>${p.tool}</td><td class="${p.state === 'pinned' ? 'ok' : 'bad'}">${p.state}</td><td><code>${p.hash.slice(0, 12)}</code></td><td>${when(p.pinnedAt)}</td><td>${p.pinnedBy ?? 'first use'}</td></tr>`)}</tbody></table>`,
  );
}

export interface AuditFilterView {
  profile?: string | undefined;
  action?: string | undefined;
  decision?: string | undefined;
  subject?: string | undefined;
}

export function auditPage(ctx: PageContext, o: { title: string; base: string; rows: AuditRow[]; filter: AuditFilterView; verify?: AuditVerifyResult; fixedAction?: string }): Html {
  const f = o.filter;
  const older = o.rows.at(-1)?.seq;
  const verify = o.verify
    ? o.verify.ok
      ? html`<p class="ok" data-verify="ok">Hash chain intact: ${o.verify.rows} rows verified.</p>`
      : html`<p class="bad" data-verify="broken">Hash chain BROKEN at row ${o.verify.brokenAt}: ${o.verify.reason} (${o.verify.rows} rows verified before it).</p>`
    : '';
  return layout(
    ctx,
    o.title,
    html`${verify}<form method="get" action="${o.base}"><label>Profile <input name="profile" value="${f.profile ?? ''}"></label>
${o.fixedAction ? '' : html`<label>Action <input name="action" value="${f.action ?? ''}" placeholder="tool.*"></label>`}
<label>Decision <input name="decision" value="${f.decision ?? ''}"></label> <label>Subject <input name="subject" value="${f.subject ?? ''}"></label> <button type="submit">Filter</button></form>
<table><thead><tr><th>#</th><th>At</th><th>Profile</th><th>Action</th><th>Decision</th><th>Subject</th><th>Reason</th><th>Data</th></tr></thead><tbody>
${o.rows.map(
  (r) => html`<tr><td class="num">${r.seq}</td><td>${when(r.at)}</td><td>${r.profile ?? '—'}</td><td>${r.action}</td><td class="${['allow', 'ok', 'approved'].includes(r.decision) ? 'ok' : ['deny', 'denied', 'error', 'reject', 'timeout'].includes(r.decision) ? 'bad' : ''}">${r.decision}</td>
<td>${r.subject ?? ''}</td><td>${r.reason ?? ''}</td><td><pre>${r.data === null ? '' : s(r.data).slice(0, 600)}</pre></td></tr>`,
)}</tbody></table>
${older !== undefined && o.rows.length >= 100 ? html`<a href="${o.base}?${q({ ...f, ...(o.fixedAction ? { action: undefined } : {}), before: older })}">Older rows</a>` : ''}`,
  );
}

export function feedbackPage(ctx: PageContext, f: { summary: { positive: number; negative: number }; rows: FeedbackView[] }, profile: string | undefined): Html {
  return layout(
    ctx,
    'Feedback on answers',
    html`<form method="get" action="/ui/feedback"><label>Profile <input name="profile" value="${profile ?? ''}"></label> <button type="submit">Filter</button></form>
<p><strong>👍 ${f.summary.positive}</strong> · <strong>👎 ${f.summary.negative}</strong> <span class="muted">(all ratings${profile ? ' of this profile' : ''}; newest ${f.rows.length} below)</span></p>
<table><thead><tr><th>When</th><th>Rating</th><th>Person</th><th>Platform</th><th>Profile</th><th>Conversation</th><th>Turn</th></tr></thead><tbody>
${f.rows.map((r) => html`<tr><td>${when(r.at)}</td><td class="${r.value === 'positive' ? 'ok' : 'bad'}">${r.value === 'positive' ? '👍' : '👎'}</td><td>${r.userId}</td><td>${r.platform}</td><td>${r.profile ?? '—'}</td><td>${r.conversation ? html`<a href="/ui/conversations/view?${q({ id: r.conversation })}">${r.conversation}</a>` : '—'}</td><td>${r.eventId}</td></tr>`)}
</tbody></table>`,
  );
}
