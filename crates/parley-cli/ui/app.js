// Parley local web UI: one ES module, no dependencies, no build step.
//
// Security rules (docs/UI.md, section 1):
// - every piece of data from the API (names, messages, reasons…) is rendered with
//   textContent / createElement only; nothing is ever parsed as HTML, so a message can never
//   become markup or a live link;
// - every fetch carries the X-Parley-CSRF token. It arrives once, in the fragment of the
//   launch redirect (#token=…), and is kept in sessionStorage, which belongs to this origin
//   and port only (cookies are shared by every port of 127.0.0.1, so the session cookie alone
//   must not be enough to read it);
// - POST bodies are always JSON with Content-Type: application/json.

const CSRF = (() => {
  const m = /^#token=([0-9a-f]{64})$/.exec(location.hash);
  if (m) {
    sessionStorage.setItem('parley-csrf', m[1]);
    // Out of the address bar and the history at once.
    history.replaceState(null, '', '#/chats');
  }
  return sessionStorage.getItem('parley-csrf') ?? '';
})();

const OFFLINE_TEXT =
  'Server unreachable — messages wait in the outbox and are sent when it is back.';

// ---------------------------------------------------------------------------------------------
// Small helpers

/** Builds an element. Children that are strings become text nodes (never HTML). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  add(el, children);
  return el;
}

function add(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const $ = (id) => document.getElementById(id);
const enc = (s) => encodeURIComponent(s);

function safeDecode(s) {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

const pad2 = (n) => String(n).padStart(2, '0');

/** A <time> element: HH:MM today, date and HH:MM otherwise. */
function timeEl(ms, cls) {
  if (ms === null || ms === undefined) return null;
  const d = new Date(Number(ms));
  if (Number.isNaN(d.getTime())) return null;
  const now = new Date();
  const hm = `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  const today = d.toDateString() === now.toDateString();
  const date = d.toLocaleDateString(undefined, {
    year: d.getFullYear() === now.getFullYear() ? undefined : 'numeric',
    month: 'short',
    day: 'numeric',
  });
  return h('time', { datetime: d.toISOString(), title: d.toLocaleString(), class: cls },
    today ? hm : `${date} ${hm}`);
}

function filterWarning(kind) {
  if (kind === 'link') return 'Hidden by your filters: it contains a link';
  if (kind === 'keyword') return 'Hidden by your filters: it matches your filter list';
  return 'Hidden by your filters';
}

// ---------------------------------------------------------------------------------------------
// The local API

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/** GET when body is undefined, otherwise POST with a JSON body. */
async function api(path, body) {
  const headers = { 'X-Parley-CSRF': CSRF };
  const init = { method: 'GET', headers, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    init.method = 'POST';
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body ?? {});
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new ApiError('The Parley UI process is not answering. Is “parley ui” still running?', 0);
  }
  let data = null;
  const text = await res.text().catch(() => '');
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const sentence = data && typeof data.error === 'string' && data.error
      ? data.error
      : `The request failed (HTTP ${res.status}).`;
    throw new ApiError(sentence, res.status);
  }
  return data;
}

const post = (path, body) => api(path, body ?? {});

// ---------------------------------------------------------------------------------------------
// Global state

const app = {
  state: null,
  conversations: [],
  layout: false, // the unlocked layout is in the DOM
  screenKey: null, // key of the screen currently rendered
  gen: 0, // render generation: a newer refresh discards older results
  revealed: new Set(), // ids of filtered messages the user chose to show
  pendingSent: new Map(), // peer -> [{id, text, queued, at}] until the server lists them
  reportTarget: null,
  reportOpener: null,
  retries401: 0,
  unreachableShown: false,
};

function showError(message) {
  const el = $('error');
  if (!message) {
    el.textContent = '';
    el.hidden = true;
    return;
  }
  el.textContent = message;
  el.hidden = false;
}

function clearTransient() {
  showError(null);
}

function renderBanner() {
  const el = $('status-banner');
  const st = app.state;
  if (st && st.has_account && !st.locked && st.online === false) {
    el.textContent = OFFLINE_TEXT;
    el.hidden = false;
  } else {
    el.textContent = '';
    el.hidden = true;
  }
}

// ---------------------------------------------------------------------------------------------
// Routing

function currentRoute() {
  const raw = location.hash.replace(/^#\/?/, '');
  const slash = raw.indexOf('/');
  const name = slash < 0 ? raw : raw.slice(0, slash);
  const arg = slash < 0 ? '' : safeDecode(raw.slice(slash + 1));
  switch (name) {
    case '':
    case 'chats':
      return { name: 'chats', key: 'chats' };
    case 'chat':
      if (arg) return { name: 'chat', peer: arg, key: `chat/${arg}` };
      break;
    case 'safety':
      if (arg) return { name: 'safety', peer: arg, key: `safety/${arg}` };
      break;
    case 'requests':
    case 'filters':
    case 'account':
      if (!arg) return { name, key: name };
      break;
    default:
      break;
  }
  return { name: 'notfound', key: `notfound/${raw}` };
}

const chatHref = (peer) => `#/chat/${enc(peer)}`;
const safetyHref = (peer) => `#/safety/${enc(peer)}`;

function go(hash) {
  if (location.hash === hash) refresh({ navigated: true });
  else location.hash = hash;
}

// ---------------------------------------------------------------------------------------------
// Refresh: state, conversation list, open screen

let refreshTimer = null;

/** Coalesces bursts of "changed" events into one refresh. */
function scheduleRefresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    refresh();
  }, 150);
}

async function refresh({ navigated = false } = {}) {
  const gen = ++app.gen;
  let state;
  try {
    state = await api('/api/state');
  } catch (err) {
    if (gen !== app.gen) return;
    renderFatal(err);
    return;
  }
  if (gen !== app.gen) return;
  if (app.unreachableShown) {
    // The process answers again: the "not answering" error no longer holds.
    app.unreachableShown = false;
    showError(null);
  }
  app.state = state;
  renderBanner();

  if (!state.has_account) {
    renderCreate();
    return;
  }
  if (state.locked) {
    renderUnlock();
    return;
  }

  ensureLayout();
  updateChrome();

  const route = currentRoute();
  const isNav = navigated || route.key !== app.screenKey;
  const screenEl = $('screen');
  if (isNav) {
    setActiveNav(route);
    const title = h('h2', { tabindex: '-1' }, 'Loading…');
    screenEl.replaceChildren(h('section', { class: 'screen loading', 'aria-busy': 'true' }, title));
    app.screenKey = `loading/${route.key}`;
    title.focus({ preventScroll: true });
  }

  // The screen first (opening a conversation marks it read), then the list.
  const screen = SCREENS[route.name];
  let data;
  let loadError = null;
  try {
    data = screen.load ? await screen.load(route) : null;
  } catch (err) {
    loadError = err;
  }
  if (gen !== app.gen) return;

  let conversations = app.conversations;
  let listError = null;
  try {
    conversations = await api('/api/conversations');
  } catch (err) {
    listError = err;
  }
  if (gen !== app.gen) return;

  if ((loadError && loadError.status === 401) || (listError && listError.status === 401)) {
    // Locked meanwhile (or the session ended): the state tells which. Retry once, not forever.
    if (app.retries401 < 1) {
      app.retries401 += 1;
      setTimeout(() => refresh({ navigated }), 0);
      return;
    }
  }
  app.retries401 = 0;

  if (!listError) app.conversations = Array.isArray(conversations) ? conversations : [];
  renderConversationList(route, listError);

  // Keep what the user was typing and where the focus was when re-rendering in place.
  const keep = isNav ? null : snapshot(screenEl);
  let el;
  if (loadError) {
    el = buildLoadError(route, loadError);
    showError(loadError.message);
  } else {
    try {
      el = screen.build(data, route);
    } catch (err) {
      console.error(err);
      el = buildLoadError(route, new ApiError('This screen could not be shown.', 0));
    }
  }
  // Keep the live message list element across in-place updates so that screen readers
  // announce only the new messages (aria-live on a replaced element announces nothing).
  const oldList = isNav ? null : screenEl.querySelector('#messages');
  const newList = el.querySelector('#messages');
  if (oldList && newList) mergeList(oldList, newList);
  screenEl.replaceChildren(el);
  app.screenKey = route.key;
  document.title = `${screen.title(route, data)} — Parley`;
  if (keep) restore(screenEl, keep);
  if (screen.after && !loadError) screen.after(el, data, { isNav, keep });
  if (isNav) {
    const heading = el.querySelector('h2');
    if (heading) heading.focus({ preventScroll: !!screen.keepScroll });
  }
}

function renderFatal(err) {
  if (err.status === 401 || (err.status === 403 && !CSRF)) {
    // No session: the server would have served only the "open the link" page, but say it.
    app.layout = false;
    app.screenKey = 'nosession';
    $('app').replaceChildren(h('main', { class: 'boot' },
      h('h1', null, 'Parley'),
      h('p', null, 'This tab has no session. Use the tab that opened the link “parley ui” ' +
        'printed, or run “parley ui” again for a new link.')));
    showError(err.message);
    return;
  }
  showError(err.message);
  if (err.status === 0) app.unreachableShown = true;
  if (!app.layout && app.screenKey !== 'create' && app.screenKey !== 'unlock') {
    $('app').replaceChildren(h('main', { class: 'boot' },
      h('h1', null, 'Parley'),
      h('p', null, 'The interface could not reach the Parley process.'),
      h('button', { type: 'button', onclick: () => refresh({ navigated: true }) }, 'Try again')));
    app.screenKey = 'fatal';
  }
}

/** Puts oldList in newList's place, appending only the new items when the old ones are unchanged. */
function mergeList(oldList, newList) {
  const oldKids = [...oldList.children];
  const newKids = [...newList.children];
  const prefix = oldKids.length <= newKids.length && oldKids.every((k, i) => k.isEqualNode(newKids[i]));
  if (prefix) oldList.append(...newKids.slice(oldKids.length));
  else oldList.replaceChildren(...newKids);
  for (const attr of newList.getAttributeNames()) oldList.setAttribute(attr, newList.getAttribute(attr));
  newList.replaceWith(oldList);
}

/** Records input values, scroll and focus inside root before an in-place re-render. */
function snapshot(root) {
  const fields = {};
  for (const el of root.querySelectorAll('input[id], textarea[id]')) {
    if (el.dataset.live !== undefined) continue; // saved immediately: the server's value wins
    fields[el.id] = { value: el.value, checked: el.checked, start: el.selectionStart, end: el.selectionEnd };
  }
  const active = document.activeElement;
  let focus = null;
  if (active && root.contains(active)) focus = active.id ? `#${active.id}` : active.dataset.key ?? null;
  const messages = root.querySelector('#messages');
  let scroll = null;
  if (messages) {
    const atBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 40;
    scroll = { top: messages.scrollTop, atBottom };
  }
  return { fields, focus, scroll };
}

function restore(root, keep) {
  for (const [id, v] of Object.entries(keep.fields)) {
    const el = root.querySelector(`#${CSS.escape(id)}`);
    if (!el) continue;
    if (el.type === 'checkbox' || el.type === 'radio') el.checked = v.checked;
    else {
      el.value = v.value;
      try {
        if (v.start !== null && v.start !== undefined) el.setSelectionRange(v.start, v.end);
      } catch {
        /* not a text field */
      }
    }
  }
  if (keep.focus) {
    let el = null;
    if (keep.focus.startsWith('#')) el = root.querySelector(`#${CSS.escape(keep.focus.slice(1))}`);
    else {
      for (const cand of root.querySelectorAll('[data-key]')) {
        if (cand.dataset.key === keep.focus) el = cand;
      }
    }
    if (el) el.focus({ preventScroll: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Locked / no account

function renderUnlock() {
  if (app.screenKey === 'unlock') return; // keep what is typed
  app.layout = false;
  app.screenKey = 'unlock';
  app.conversations = [];
  app.revealed.clear();
  app.pendingSent.clear();
  closeReportDialog();
  const result = $('report-result');
  result.textContent = '';
  result.hidden = true;
  document.title = 'Unlock — Parley';

  const input = h('input', {
    id: 'passphrase', type: 'password', autocomplete: 'current-password', required: true,
    'aria-describedby': 'unlock-error',
  });
  const error = h('p', { id: 'unlock-error', class: 'form-error', role: 'alert', hidden: true });
  const submit = h('button', { type: 'submit', id: 'unlock-submit', class: 'primary' }, 'Unlock');
  const form = h('form', { id: 'unlock-form', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: 'passphrase' }, 'Passphrase'), input),
    error,
    h('div', { class: 'actions' }, submit));

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearTransient();
    const passphrase = input.value;
    input.value = '';
    if (!passphrase) {
      error.textContent = 'Type your passphrase.';
      error.hidden = false;
      input.focus();
      return;
    }
    submit.disabled = true;
    error.hidden = true;
    try {
      app.state = await post('/api/unlock', { passphrase });
      error.textContent = '';
      ensureEvents();
      await refresh({ navigated: true });
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
      input.focus();
    } finally {
      submit.disabled = false;
    }
  });

  const heading = h('h2', { tabindex: '-1' }, 'Unlock Parley');
  const main = h('main', { id: 'unlock-screen', class: 'gate' },
    h('h1', { class: 'brand' }, 'Parley'),
    heading,
    h('p', null, 'Your messages and keys are encrypted on this device. Type your passphrase to open them. It is sent once to the Parley process on this computer and not stored by this page.'),
    form);
  $('app').replaceChildren(main);
  input.focus();
}

function renderCreate() {
  if (app.screenKey === 'create') return;
  app.layout = false;
  app.screenKey = 'create';
  closeReportDialog();
  document.title = 'Create an account — Parley';

  const user = h('input', { id: 'create-username', type: 'text', autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false' });
  const server = h('input', { id: 'create-server', type: 'url', placeholder: 'http://127.0.0.1:7470', autocomplete: 'url', 'aria-describedby': 'create-server-hint' });
  const pass = h('input', { id: 'create-passphrase', type: 'password', autocomplete: 'new-password', required: true, 'aria-describedby': 'create-passphrase-hint' });
  const error = h('p', { id: 'create-error', class: 'form-error', role: 'alert', hidden: true });
  const submit = h('button', { type: 'submit', id: 'create-submit', class: 'primary' }, 'Create account');
  const form = h('form', { id: 'create-form', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: 'create-username' }, 'Username'), user),
    h('div', { class: 'field' },
      h('label', { for: 'create-server' }, 'Server address'),
      server,
      h('p', { id: 'create-server-hint', class: 'hint' }, 'Leave it empty to use http://127.0.0.1:7470.')),
    h('div', { class: 'field' },
      h('label', { for: 'create-passphrase' }, 'Passphrase'),
      pass,
      h('p', { id: 'create-passphrase-hint', class: 'hint' }, 'It encrypts your keys and messages on this device. There is no way to recover it.')),
    error,
    h('div', { class: 'actions' }, submit));

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearTransient();
    const body = {
      username: user.value.trim(),
      server: server.value.trim() || server.placeholder,
      passphrase: pass.value,
    };
    if (!body.username || !body.passphrase) {
      error.textContent = 'Choose a username and a passphrase.';
      error.hidden = false;
      (body.username ? pass : user).focus();
      return;
    }
    submit.disabled = true;
    error.hidden = true;
    try {
      app.state = await post('/api/account', body);
      pass.value = '';
      ensureEvents();
      await refresh({ navigated: true });
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });

  const main = h('main', { id: 'create-screen', class: 'gate' },
    h('h1', { class: 'brand' }, 'Parley'),
    h('h2', { tabindex: '-1' }, 'Create your account'),
    h('p', null, 'This device has no Parley account yet. Your keys are made here and never leave this computer.'),
    form);
  $('app').replaceChildren(main);
  user.focus();
}

// ---------------------------------------------------------------------------------------------
// Unlocked layout

function ensureLayout() {
  if (app.layout && $('screen')) return;
  app.layout = true;
  app.screenKey = null;

  const newName = h('input', { id: 'new-chat-name', type: 'text', required: true, autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false' });
  const newForm = h('form', { id: 'new-chat-form', class: 'new-chat', novalidate: true },
    h('label', { for: 'new-chat-name' }, 'Start a conversation with'),
    h('div', { class: 'inline' }, newName, h('button', { type: 'submit', id: 'new-chat-submit' }, 'Start')));
  newForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const name = newName.value.trim();
    if (!name) {
      showError('Type the username of the person you want to write to.');
      newName.focus();
      return;
    }
    clearTransient();
    newName.value = '';
    go(chatHref(name));
  });

  const lock = h('button', { type: 'button', id: 'lock-button' }, 'Lock');
  lock.addEventListener('click', async () => {
    clearTransient();
    lock.disabled = true;
    try {
      app.state = await post('/api/lock', {});
      app.screenKey = null;
      await refresh({ navigated: true });
    } catch (err) {
      showError(err.message);
      lock.disabled = false;
    }
  });

  const navLink = (id, hash, label, extra) =>
    h('li', null, h('a', { id, href: hash, class: 'nav-link' }, label, extra));

  const requestsCount = h('span', { id: 'requests-count', class: 'badge', hidden: true });

  const top = h('header', { class: 'topbar' },
    h('div', { class: 'brand-row' },
      h('h1', { class: 'brand' }, 'Parley'),
      h('p', { class: 'whoami-line' }, h('span', { class: 'visually-hidden' }, 'Signed in as '), h('span', { id: 'whoami' })),
      lock),
    h('nav', { 'aria-label': 'Main' },
      h('ul', { class: 'nav-list' },
        navLink('nav-chats', '#/chats', 'Chats'),
        navLink('nav-requests', '#/requests', 'Requests', [' ', requestsCount]),
        navLink('nav-filters', '#/filters', 'Filters'),
        navLink('nav-account', '#/account', 'Account'))));

  const pane = h('section', { class: 'conv-pane', 'aria-labelledby': 'conv-heading' },
    h('h2', { id: 'conv-heading', class: 'pane-heading' }, 'Conversations'),
    h('ul', { id: 'conversation-list' }),
    h('p', { class: 'empty', id: 'conversation-empty', hidden: true }, 'No conversations yet. Start one below.'),
    newForm);

  const main = h('main', { id: 'main' },
    h('div', { id: 'kt-alarms', class: 'warning-block', role: 'alert', hidden: true }),
    h('div', { id: 'screen' }));

  const skip = h('a', { href: '#main', class: 'skip-link' }, 'Skip to the open screen');
  skip.addEventListener('click', (ev) => {
    ev.preventDefault(); // keep the hash route
    const heading = $('screen')?.querySelector('h2');
    if (heading) heading.focus();
  });
  $('app').replaceChildren(h('div', { class: 'layout' }, skip, top, pane, main));
}

function updateChrome() {
  const st = app.state;
  $('whoami').textContent = st.username ?? '';

  const n = Array.isArray(st.requests) ? st.requests.length : Number(st.requests) || 0;
  const badge = $('requests-count');
  badge.textContent = String(n);
  badge.hidden = n === 0;
  badge.setAttribute('aria-label', plural(n, 'pending request', 'pending requests'));

  const alarms = Array.isArray(st.kt_alarms) ? st.kt_alarms : [];
  const box = $('kt-alarms');
  if (alarms.length === 0) {
    box.replaceChildren();
    box.hidden = true;
  } else {
    box.replaceChildren(
      h('h2', { class: 'warning-title' }, 'Key-transparency alarm'),
      h('p', null, 'The key directory disagrees with what this device saw: someone may be impersonating these people. Compare safety numbers before you trust them.'),
      h('ul', null, alarms.map((a) => h('li', null,
        h('a', { href: safetyHref(String(a.user)) }, String(a.user)), `: ${a.reason ?? ''}`))));
    box.hidden = false;
  }
}

function setActiveNav(route) {
  const map = { chats: 'nav-chats', chat: 'nav-chats', requests: 'nav-requests', filters: 'nav-filters', account: 'nav-account', safety: 'nav-chats' };
  for (const id of ['nav-chats', 'nav-requests', 'nav-filters', 'nav-account']) {
    const el = $(id);
    if (!el) continue;
    if (map[route.name] === id) el.setAttribute('aria-current', 'page');
    else el.removeAttribute('aria-current');
  }
  const layout = document.querySelector('.layout');
  if (layout) layout.dataset.route = route.name;
}

function previewText(last) {
  if (!last) return 'No messages yet';
  if (last.filtered) return 'Hidden by your filters';
  if (last.text === null || last.text === undefined) return 'Could not be decrypted';
  const text = String(last.text).replace(/\s+/g, ' ').trim();
  return last.outgoing ? `You: ${text}` : text;
}

function renderConversationList(route, listError) {
  const list = $('conversation-list');
  const empty = $('conversation-empty');
  if (!list) return;
  if (listError) {
    showError(listError.message);
    if (app.conversations.length === 0) {
      empty.textContent = 'The conversation list could not be loaded.';
      empty.hidden = false;
    }
    return;
  }
  const openPeer = route.name === 'chat' ? route.peer : null;
  const items = app.conversations.map((c) => {
    const peer = String(c.peer);
    const unread = Number(c.unread) || 0;
    const link = h('a', { href: chatHref(peer), 'aria-current': peer === openPeer ? 'page' : null },
      h('span', { class: 'conv-top' },
        h('span', { class: 'name' }, peer),
        c.blocked ? h('span', { class: 'tag blocked' }, 'blocked') : null,
        c.kt === 'mismatch' ? h('span', { class: 'tag mismatch' }, 'key mismatch') : null,
        unread > 0 ? h('span', { class: 'unread', 'aria-label': `${unread} unread` }, String(unread)) : null,
        c.last ? timeEl(c.last.at, 'conv-time') : null),
      h('span', { class: c.last && c.last.filtered ? 'preview filtered' : 'preview' }, previewText(c.last)));
    return h('li', { dataset: { peer }, class: peer === openPeer ? 'current' : null }, link);
  });
  const focused = document.activeElement;
  const focusedPeer = focused && list.contains(focused) ? focused.closest('li')?.dataset.peer : null;
  list.replaceChildren(...items);
  if (focusedPeer !== null && focusedPeer !== undefined) {
    const again = items.find((li) => li.dataset.peer === focusedPeer);
    again?.querySelector('a')?.focus({ preventScroll: true });
  }
  empty.textContent = 'No conversations yet. Start one below.';
  empty.hidden = items.length > 0;
}

function buildLoadError(route, err) {
  return h('section', { class: 'screen error-screen' },
    h('h2', { tabindex: '-1' }, 'This screen could not be loaded'),
    h('p', null, err.message),
    h('div', { class: 'actions' },
      h('button', { type: 'button', onclick: () => { clearTransient(); refresh({ navigated: true }); } }, 'Try again'),
      h('a', { href: '#/chats', class: 'button-link' }, 'Back to chats')));
}

// ---------------------------------------------------------------------------------------------
// Screens

const SCREENS = {
  chats: {
    title: () => 'Chats',
    build: () => h('section', { id: 'chats-screen', class: 'screen' },
      h('h2', { tabindex: '-1' }, 'Chats'),
      h('p', null, app.conversations.length
        ? 'Choose a conversation from the list, or start a new one.'
        : 'No conversations yet. Start one with the form in the conversation list.')),
  },
  chat: {
    title: (r) => r.peer,
    load: loadConversation,
    build: buildConversation,
    after: afterConversation,
    keepScroll: true,
  },
  requests: {
    title: () => 'Message requests',
    load: () => api('/api/requests'),
    build: buildRequests,
  },
  safety: {
    title: (r) => `Safety number with ${r.peer}`,
    load: (r) => api(`/api/safety/${enc(r.peer)}`),
    build: buildSafety,
  },
  filters: {
    title: () => 'Filters',
    load: () => api('/api/filters'),
    build: buildFilters,
  },
  account: {
    title: () => 'Account',
    load: () => api('/api/account'),
    build: buildAccount,
  },
  notfound: {
    title: () => 'Not found',
    build: () => h('section', { class: 'screen' },
      h('h2', { tabindex: '-1' }, 'Page not found'),
      h('p', null, h('a', { href: '#/chats' }, 'Go to your conversations'))),
  },
};

// --- Conversation ---------------------------------------------------------------------------

async function loadConversation(route) {
  try {
    return await api(`/api/conversations/${enc(route.peer)}`);
  } catch (err) {
    if (err.status === 404) {
      // No conversation with this person yet: an empty one; sending will tell whether they exist.
      return { peer: route.peer, request: false, blocked: false, kt: null, items: [], fresh: true };
    }
    throw err;
  }
}

function stateText(item) {
  if (item.outgoing) {
    switch (item.state) {
      case 'sent': return 'sent';
      case 'queued': return 'queued — waiting for the server';
      case 'failed': return 'failed';
      default: return item.state ? String(item.state) : '';
    }
  }
  if (item.state === 'undecryptable') return 'could not be decrypted';
  return '';
}

function messageKey(id) {
  return typeof id === 'string' ? `s:${id}` : `n:${id}`;
}

function buildMessage(item, peer) {
  const outgoing = !!item.outgoing;
  const undecryptable = item.state === 'undecryptable' || (!outgoing && item.text === null);
  const id = item.id;
  const li = h('li', {
    class: `message ${outgoing ? 'outgoing' : 'incoming'}${item.state ? ` state-${item.state}` : ''}`,
    dataset: { id: String(id) },
  });
  const who = h('span', { class: 'visually-hidden' }, outgoing ? 'You: ' : `${item.from ?? peer}: `);
  const text = h('span', { class: 'text' });
  const body = h('div', { class: 'bubble' }, who, text);
  li.append(body);

  const revealKey = messageKey(id);
  if (undecryptable) {
    text.classList.add('muted');
    text.textContent = 'Unreadable message';
  } else if (item.filtered && !outgoing && !app.revealed.has(revealKey)) {
    text.classList.add('filter-warning');
    text.textContent = filterWarning(item.filtered);
    const reveal = h('button', { type: 'button', class: 'reveal small', dataset: { key: `reveal:${id}` } }, 'Show');
    reveal.addEventListener('click', () => {
      app.revealed.add(revealKey);
      text.classList.remove('filter-warning');
      text.textContent = item.text ?? '';
      reveal.remove();
      const report = li.querySelector('.report-button');
      (report ?? text).focus?.();
    });
    body.append(' ', reveal);
  } else {
    text.textContent = item.text ?? '';
  }

  const meta = h('div', { class: 'meta' });
  // Incoming: when it arrived here (the sender's clock is the sender's to set).
  const t = timeEl(outgoing ? item.sent_at : (item.received_at ?? item.sent_at));
  if (t) meta.append(t);
  const st = stateText({ ...item, outgoing, state: undecryptable && !outgoing ? 'undecryptable' : item.state });
  meta.append(' ', h('span', { class: `state${st ? '' : ' empty-state'}` }, st));
  if (!outgoing && !undecryptable) {
    const report = h('button', {
      type: 'button', class: 'report-button small link-like', dataset: { key: `report:${id}` },
      'aria-label': 'Report this message',
    }, 'Report');
    report.addEventListener('click', () => openReportDialog(item, report));
    meta.append(' ', report);
  }
  li.append(meta);
  return li;
}

function buildNotice(item, peer, acceptable) {
  const li = h('li', { class: `notice notice-${item.event ?? 'info'}`, dataset: { event: item.event ?? '' } },
    h('span', { class: 'notice-text' }, item.text ?? ''), ' ', timeEl(item.at));
  if (item.event === 'key_change' && acceptable) {
    const btn = h('button', { type: 'button', class: 'accept-key small', dataset: { key: 'accept-key' } }, 'Accept the new key');
    const status = h('span', { class: 'inline-status', role: 'status' });
    btn.addEventListener('click', async () => {
      clearTransient();
      btn.disabled = true;
      try {
        await post(`/api/peers/${enc(peer)}/accept-key`, {});
        status.textContent = 'New key accepted.';
        refresh();
      } catch (err) {
        showError(err.message);
        btn.disabled = false;
      }
    });
    li.append(h('p', { class: 'notice-help' },
      `Before you accept the new key, compare the safety number with ${peer} in person or by scanning the code: `,
      h('a', { href: safetyHref(peer) }, 'see the safety number'), '.'),
    h('div', { class: 'actions' }, btn, status));
  }
  return li;
}

function ktLabel(kt) {
  if (kt === 'verified' || kt === 'pending' || kt === 'mismatch') return kt;
  return 'unknown';
}

function buildConversation(data, route) {
  const peer = String(data.peer ?? route.peer);
  const items = Array.isArray(data.items) ? data.items : [];

  // Messages this page sent that the server does not list yet.
  // A bridge only: dropped once the server lists the message (by id, or by text and time in
  // case the outbox and the history number it differently) or after half a minute.
  const now = Date.now();
  const pending = (app.pendingSent.get(peer) ?? []).filter((p) => now - p.at < 30000 && !items.some(
    (it) => it.kind === 'message' && (String(it.id) === String(p.id)
      || (it.outgoing && it.text === p.text && Number(it.sent_at) >= p.at - 60000))));
  if (pending.length) app.pendingSent.set(peer, pending);
  else app.pendingSent.delete(peer);

  // A key-change notice can be accepted unless a later notice says it was.
  let lastChange = -1;
  let lastAccepted = -1;
  items.forEach((it, i) => {
    if (it.kind === 'notice' && it.event === 'key_change') lastChange = i;
    if (it.kind === 'notice' && it.event === 'key_accepted') lastAccepted = i;
  });

  const list = h('ol', { id: 'messages', 'aria-live': 'polite', 'aria-label': `Messages with ${peer}`, tabindex: '0' });
  items.forEach((it, i) => {
    if (it.kind === 'notice') list.append(buildNotice(it, peer, i === lastChange && lastAccepted < lastChange));
    else list.append(buildMessage(it, peer));
  });
  for (const p of pending) {
    list.append(buildMessage({
      kind: 'message', id: p.id, from: app.state?.username, outgoing: true, text: p.text,
      sent_at: p.at, state: p.queued ? 'queued' : 'sent', filtered: null,
    }, peer));
  }
  const isEmpty = list.children.length === 0;
  const empty = h('p', { class: 'empty', hidden: !isEmpty }, 'No messages yet. Say hello.');

  const kt = ktLabel(data.kt);
  const blockBtn = h('button', { type: 'button', id: 'block-toggle', class: data.blocked ? '' : 'danger-outline' },
    data.blocked ? 'Unblock' : 'Block');
  blockBtn.addEventListener('click', async () => {
    clearTransient();
    blockBtn.disabled = true;
    try {
      await post(`/api/peers/${enc(peer)}/${data.blocked ? 'unblock' : 'block'}`, {});
      await refresh();
    } catch (err) {
      showError(err.message);
      blockBtn.disabled = false;
    }
  });

  const header = h('header', { class: 'conv-header' },
    h('h2', { tabindex: '-1' }, h('span', { class: 'visually-hidden' }, 'Conversation with '), peer),
    h('div', { class: 'conv-tools' },
      h('span', { class: `kt-badge kt-${kt}`, title: 'Key-transparency status of their key' }, kt),
      data.blocked ? h('span', { class: 'tag blocked' }, 'blocked') : null,
      h('a', { id: 'safety-link', href: safetyHref(peer) }, 'Safety number'),
      blockBtn));

  const section = h('section', { id: 'conversation', class: 'screen conversation', dataset: { peer } }, header);
  if (kt === 'mismatch') {
    section.append(h('p', { class: 'warning-block' },
      `The key directory does not confirm ${peer}'s key. Compare safety numbers before you trust this conversation.`));
  }
  if (data.blocked) {
    section.append(h('p', { class: 'note' }, `You blocked ${peer}. Their new messages are not delivered to you.`));
  }
  section.append(list, empty);

  if (data.request) {
    section.append(h('div', { class: 'note request-note' },
      h('p', null, `This is a message request: ${peer} has not talked with you before. Accept it before you reply; links stay inert until you do.`),
      h('p', null, h('a', { href: '#/requests' }, 'Go to message requests'))));
  } else {
    section.append(buildCompose(peer));
  }
  return section;
}

function buildCompose(peer) {
  const text = h('textarea', {
    id: 'compose-text', rows: '2', required: true, 'aria-describedby': 'compose-hint',
    autocomplete: 'off',
  });
  const submit = h('button', { type: 'submit', id: 'compose-submit', class: 'primary' }, 'Send');
  const form = h('form', { id: 'compose-form', class: 'compose', novalidate: true },
    h('label', { for: 'compose-text' }, 'Message'),
    h('div', { class: 'inline' }, text, submit),
    h('p', { id: 'compose-hint', class: 'hint' }, 'Enter sends, Shift+Enter starts a new line.'));

  text.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing && !ev.altKey && !ev.ctrlKey && !ev.metaKey) {
      ev.preventDefault();
      form.requestSubmit();
    }
  });

  let sending = false;
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (sending) return;
    const body = text.value;
    if (!body.trim()) {
      text.focus();
      return;
    }
    clearTransient();
    sending = true;
    submit.disabled = true;
    try {
      const res = await post(`/api/conversations/${enc(peer)}/send`, { text: body });
      if (text.value === body) text.value = '';
      if (res && res.id !== undefined && res.id !== null) {
        const list = app.pendingSent.get(peer) ?? [];
        list.push({ id: res.id, text: body, queued: !!res.queued, at: Date.now() });
        app.pendingSent.set(peer, list);
      }
      await refresh();
      const again = $('compose-text');
      if (again) again.focus({ preventScroll: true });
      scrollToNewest();
    } catch (err) {
      showError(err.message);
    } finally {
      sending = false;
      const btn = $('compose-submit');
      if (btn) btn.disabled = false;
      submit.disabled = false;
    }
  });
  return form;
}

function scrollToNewest() {
  const list = $('messages');
  if (!list) return;
  list.scrollTop = list.scrollHeight;
  if (window.matchMedia('(max-width: 700px)').matches) {
    // Narrow window: the page scrolls too; show the newest message and the compose box.
    const target = $('compose-form') ?? list.lastElementChild ?? list;
    target.scrollIntoView({ block: 'end' });
  }
}

function afterConversation(el, data, { isNav, keep }) {
  const list = el.querySelector('#messages');
  if (!list) return;
  if (isNav || !keep || !keep.scroll || keep.scroll.atBottom) {
    requestAnimationFrame(() => scrollToNewest());
  } else {
    list.scrollTop = keep.scroll.top;
  }
}

// --- Report dialog ----------------------------------------------------------------------------

function openReportDialog(item, opener) {
  const dialog = $('report-dialog');
  app.reportTarget = item;
  app.reportOpener = opener;
  $('report-reason').value = '';
  $('report-context').value = '10';
  $('report-block').checked = false;
  const err = $('report-error');
  err.textContent = '';
  err.hidden = true;
  $('report-submit').disabled = false;
  if (typeof dialog.showModal === 'function') {
    if (!dialog.open) dialog.showModal();
  } else {
    dialog.setAttribute('open', '');
  }
  $('report-reason').focus();
}

function closeReportDialog() {
  const dialog = $('report-dialog');
  if (dialog && dialog.open) dialog.close();
}

function setupReportDialog() {
  const dialog = $('report-dialog');
  const form = $('report-form');
  const err = $('report-error');
  const submit = $('report-submit');

  $('report-cancel').addEventListener('click', () => dialog.close());
  dialog.addEventListener('close', () => {
    const opener = app.reportOpener;
    app.reportTarget = null;
    app.reportOpener = null;
    if (opener && opener.isConnected) opener.focus();
  });

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const item = app.reportTarget;
    if (!item) {
      dialog.close();
      return;
    }
    const reason = $('report-reason').value.trim();
    const contextRaw = $('report-context').value.trim();
    const context = contextRaw === '' ? 0 : Number(contextRaw);
    if (!Number.isInteger(context) || context < 0 || context > 50) {
      err.textContent = 'Choose between 0 and 50 earlier messages.';
      err.hidden = false;
      $('report-context').focus();
      return;
    }
    const block = $('report-block').checked;
    submit.disabled = true;
    err.hidden = true;
    try {
      const res = await post('/api/reports', { from: item.from, message_id: item.id, reason, context, block });
      const result = $('report-result');
      result.textContent = `Report ${res?.report_id ?? ''} sent to the moderators.`;
      result.hidden = false;
      dialog.close();
      if (block) refresh();
    } catch (e) {
      err.textContent = e.message;
      err.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });
}

// --- Requests -----------------------------------------------------------------------------------

function buildRequests(data) {
  const requests = Array.isArray(data) ? data : [];
  const list = h('ul', { id: 'requests-list' });
  for (const r of requests) {
    const peer = String(r.from);
    const count = Number(r.count) || (Array.isArray(r.messages) ? r.messages.length : 0);
    const msgs = h('ol', { class: 'request-messages', 'aria-label': `Messages from ${peer}` });
    for (const m of r.messages ?? []) {
      const key = messageKey(m.id);
      const li = h('li', { class: 'request-message', dataset: { id: String(m.id) } });
      const text = h('span', { class: 'text' });
      if (m.filtered && !app.revealed.has(key)) {
        text.classList.add('filter-warning');
        text.textContent = filterWarning(m.filtered);
        const reveal = h('button', { type: 'button', class: 'reveal small', dataset: { key: `reveal:${m.id}` } }, 'Show');
        reveal.addEventListener('click', () => {
          app.revealed.add(key);
          text.classList.remove('filter-warning');
          text.textContent = m.text ?? '';
          reveal.remove();
        });
        li.append(text, ' ', reveal);
      } else {
        text.textContent = m.text ?? '';
        if (m.text === null || m.text === undefined) text.classList.add('muted');
        li.append(text);
      }
      const t = timeEl(m.sent_at);
      if (t) li.append(' ', t);
      msgs.append(li);
    }

    const act = (what, label, cls) => {
      const b = h('button', { type: 'button', class: `${what} ${cls ?? ''}`.trim(), dataset: { key: `${what}:${peer}` } }, label);
      b.addEventListener('click', async () => {
        clearTransient();
        for (const other of b.parentElement.querySelectorAll('button')) other.disabled = true;
        try {
          await post(`/api/requests/${enc(peer)}/${what}`, {});
          if (what === 'accept') go(chatHref(peer));
          else await refresh();
        } catch (err) {
          showError(err.message);
          for (const other of b.parentElement?.querySelectorAll('button') ?? []) other.disabled = false;
        }
      });
      return b;
    };

    const first = timeEl(r.first_at);
    list.append(h('li', { dataset: { peer }, class: 'request' },
      h('h3', { class: 'name' }, peer),
      h('p', { class: 'request-meta' },
        h('span', { class: 'count' }, plural(count, 'message', 'messages')),
        first ? [', first ', first] : null),
      msgs,
      h('div', { class: 'actions' },
        act('accept', 'Accept', 'primary'),
        act('decline', 'Decline'),
        act('block', 'Block', 'danger-outline'))));
  }
  return h('section', { id: 'requests-screen', class: 'screen' },
    h('h2', { tabindex: '-1' }, 'Message requests'),
    h('p', { class: 'explain' }, 'People you have not talked to yet. Links stay inert until you accept.'),
    list,
    requests.length === 0 ? h('p', { class: 'empty' }, 'No message requests.') : null);
}

// --- Safety -------------------------------------------------------------------------------------

function ktStatusText(kt) {
  if (!kt || !kt.status) return 'unknown — not checked yet';
  switch (kt.status) {
    case 'verified': return kt.epoch === null || kt.epoch === undefined ? 'verified' : `verified (epoch ${kt.epoch})`;
    case 'pending': return 'pending — not in the directory yet';
    case 'mismatch': return `MISMATCH: ${kt.reason ?? 'the directory disagrees'}`;
    default: return String(kt.status);
  }
}

function safetyGroups(number) {
  const s = String(number ?? '').trim();
  let groups = s.split(/\s+/).filter(Boolean);
  if (groups.length === 1 && /^\d{60}$/.test(s)) groups = s.match(/\d{5}/g);
  return groups;
}

function buildSafety(data, route) {
  const peer = String(data.peer ?? route.peer);
  const numberEl = h('p', { id: 'safety-number', class: 'safety-number' });
  safetyGroups(data.safety_number).forEach((g, i) => {
    if (i > 0) numberEl.append(' ');
    numberEl.append(h('span', { class: 'group' }, g));
  });

  const canvas = h('canvas', { id: 'safety-qr', width: '0', height: '0', role: 'img', 'aria-label': 'QR code of the safety number' });
  drawQr(canvas, data.qr);

  const kt = data.kt ?? null;
  const ktText = ktStatusText(kt);
  return h('section', { id: 'safety-screen', class: 'screen' },
    h('h2', { tabindex: '-1' }, `Safety number with ${peer}`),
    h('p', { class: 'explain' },
      `Compare this number with ${peer} in person, or scan the code with their device. If it matches on both devices, no one is in the middle of your conversation.`),
    numberEl,
    h('div', { class: 'qr-wrap' }, canvas),
    h('dl', { class: 'facts' },
      h('dt', null, 'Key transparency'),
      h('dd', null, h('span', { id: 'kt-status', class: `kt-${kt?.status ?? 'unknown'}` }, ktText),
        kt && kt.reason && kt.status !== 'mismatch' ? h('span', { class: 'hint kt-note' }, ` (${kt.reason})`) : null),
      kt && kt.root ? [h('dt', null, 'Directory root'), h('dd', { class: 'mono' }, String(kt.root))] : null,
      h('dt', null, `${peer}'s key fingerprint`),
      h('dd', { class: 'mono', id: 'safety-fingerprint' }, String(data.fingerprint ?? ''))),
    h('p', null, h('a', { href: chatHref(peer) }, `Back to the conversation with ${peer}`)));
}

function drawQr(canvas, qr) {
  const size = Number(qr?.size) || 0;
  let rows = qr?.modules;
  if (typeof rows === 'string') {
    const flat = rows.replace(/\s+/g, '');
    rows = [];
    for (let i = 0; i < size; i++) rows.push(flat.slice(i * size, (i + 1) * size));
  }
  if (!size || !Array.isArray(rows)) {
    canvas.width = 0;
    canvas.height = 0;
    canvas.setAttribute('aria-label', 'QR code of the safety number (not available)');
    return;
  }
  const quiet = 4;
  const total = size + 2 * quiet;
  const scale = Math.max(4, Math.floor(300 / total));
  canvas.width = total * scale;
  canvas.height = total * scale;
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  ctx.fillStyle = '#ffffff';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = '#000000';
  for (let y = 0; y < size; y++) {
    const row = rows[y];
    for (let x = 0; x < size; x++) {
      const cell = Array.isArray(row) ? row[x] : String(row ?? '')[x];
      if (cell === '1' || cell === 1 || cell === true) {
        ctx.fillRect((x + quiet) * scale, (y + quiet) * scale, scale, scale);
      }
    }
  }
}

// --- Filters ------------------------------------------------------------------------------------

function buildFilters(f) {
  const enabled = h('input', { id: 'filter-enabled', type: 'checkbox', 'data-live': '' });
  enabled.checked = !!f.enabled;
  const links = h('input', { id: 'filter-links', type: 'checkbox', 'data-live': '' });
  links.checked = !!f.link_warnings;
  const saved = h('span', { class: 'inline-status', role: 'status' });

  const save = async (changed) => {
    clearTransient();
    saved.textContent = 'Saving…';
    try {
      await post('/api/filters', { enabled: enabled.checked, link_warnings: links.checked });
      saved.textContent = 'Saved.';
      refresh();
    } catch (err) {
      changed.checked = !changed.checked;
      saved.textContent = '';
      showError(err.message);
    }
  };
  enabled.addEventListener('change', () => save(enabled));
  links.addEventListener('change', () => save(links));

  const rules = Array.isArray(f.rules) ? f.rules : [];
  const ruleList = h('ul', { id: 'filter-rules' });
  for (const r of rules) {
    const pattern = String(r.pattern ?? '');
    const remove = h('button', {
      type: 'button', class: 'remove-rule small', 'aria-label': `Remove rule ${pattern}`,
      dataset: { key: `remove:${r.regex ? 1 : 0}:${pattern}` },
    }, 'Remove');
    remove.addEventListener('click', async () => {
      clearTransient();
      remove.disabled = true;
      try {
        await post('/api/filters/rules/delete', { pattern: r.pattern, regex: !!r.regex });
        await refresh();
        $('filter-rule-pattern')?.focus();
      } catch (err) {
        showError(err.message);
        remove.disabled = false;
      }
    });
    ruleList.append(h('li', null,
      h('code', { class: 'pattern' }, pattern),
      r.regex ? h('span', { class: 'tag regex' }, 'regex') : null,
      ' ', remove));
  }

  const pattern = h('input', { id: 'filter-rule-pattern', type: 'text', required: true, autocomplete: 'off', spellcheck: 'false' });
  const regex = h('input', { id: 'filter-rule-regex', type: 'checkbox' });
  const ruleForm = h('form', { id: 'filter-rule-form', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: 'filter-rule-pattern' }, 'Word or pattern to hide'), pattern),
    h('div', { class: 'field check' }, regex, h('label', { for: 'filter-rule-regex' }, 'Regular expression')),
    h('div', { class: 'actions' }, h('button', { type: 'submit', id: 'filter-rule-submit', class: 'primary' }, 'Add rule')));
  ruleForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const p = pattern.value.trim();
    if (!p) {
      showError('Type a word or a pattern.');
      pattern.focus();
      return;
    }
    clearTransient();
    try {
      await post('/api/filters/rules', { pattern: p, regex: regex.checked });
      pattern.value = '';
      regex.checked = false;
      await refresh();
      $('filter-rule-pattern')?.focus();
    } catch (err) {
      showError(err.message);
    }
  });

  return h('section', { id: 'filters-screen', class: 'screen' },
    h('h2', { tabindex: '-1' }, 'Filters'),
    h('p', { class: 'explain strong' }, 'Filters run on this device only; nothing is reported to the server.'),
    h('fieldset', null,
      h('legend', null, 'Hiding'),
      h('div', { class: 'field check' }, enabled, h('label', { for: 'filter-enabled' }, 'Hide messages that match the filter lists')),
      h('div', { class: 'field check' }, links, h('label', { for: 'filter-links' }, 'Hide messages with links behind a warning')),
      saved,
      f.defaults ? h('p', { class: 'note', id: 'filter-defaults' }, 'These settings are the defaults for your account’s age class; they follow it until you change them.') : null),
    h('h3', null, 'Your own rules'),
    ruleList,
    rules.length === 0 ? h('p', { class: 'empty' }, 'No rules of your own yet.') : null,
    ruleForm);
}

// --- Account ------------------------------------------------------------------------------------

function buildAccount(a) {
  const row = (label, value, attrs) => [h('dt', null, label), h('dd', attrs ?? null, value)];
  return h('section', { id: 'account-screen', class: 'screen' },
    h('h2', { tabindex: '-1' }, 'Account'),
    h('dl', { class: 'facts' },
      row('Username', String(a.username ?? '')),
      row('Device id', String(a.device_id ?? ''), { class: 'mono' }),
      row('Server', String(a.server ?? ''), { class: 'mono' }),
      row('Key fingerprint', String(a.fingerprint ?? ''), { id: 'account-fingerprint', class: 'mono' }),
      row('Age class', a.age_class === 'minor' ? 'minor' : a.age_class === 'adult' ? 'adult' : String(a.age_class ?? '')),
      row('Messages queued on the server', a.queued === null || a.queued === undefined ? 'unknown — the server is unreachable' : String(a.queued)),
      row('Messages in the outbox', String(a.outbox ?? 0))),
    h('p', { class: 'note' }, 'Lock closes the encrypted store and forgets the keys until you unlock again.'));
}

// ---------------------------------------------------------------------------------------------
// Live updates: one WebSocket that says "something changed"

const events = { ws: null, delay: 1000, timer: null, opened: false };

function connectEvents() {
  if (events.timer) {
    clearTimeout(events.timer);
    events.timer = null;
  }
  if (events.ws && (events.ws.readyState === WebSocket.OPEN || events.ws.readyState === WebSocket.CONNECTING)) return;
  let ws;
  try {
    // A WebSocket upgrade cannot carry a custom header: the CSRF token goes in the query.
    ws = new WebSocket(`ws://${location.host}/api/events?csrf=${encodeURIComponent(CSRF)}`);
  } catch {
    reconnectLater();
    return;
  }
  events.ws = ws;
  ws.addEventListener('open', () => {
    events.delay = 1000;
    // Something may have changed while the socket was down, or before it first opened.
    scheduleRefresh();
    events.opened = true;
  });
  ws.addEventListener('message', (ev) => {
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    if (msg.type === 'changed') scheduleRefresh();
    else if (msg.type === 'online') {
      if (app.state) {
        app.state.online = !!msg.online;
        renderBanner();
      }
    }
  });
  let wasOpen = false;
  ws.addEventListener('open', () => {
    wasOpen = true;
  });
  ws.addEventListener('close', () => {
    if (events.ws === ws) events.ws = null;
    // A socket that was open and closed: check the process (shows an error if it is gone).
    if (wasOpen) scheduleRefresh();
    reconnectLater();
  });
}

function reconnectLater() {
  if (events.timer) return;
  const wait = events.delay + Math.floor(Math.random() * 500);
  events.delay = Math.min(events.delay * 2, 30000);
  events.timer = setTimeout(() => {
    events.timer = null;
    connectEvents();
  }, wait);
}

/** After unlocking: reconnect at once instead of waiting for the backoff. */
function ensureEvents() {
  events.delay = 1000;
  connectEvents();
}

// ---------------------------------------------------------------------------------------------
// Start

function start() {
  setupReportDialog();
  window.addEventListener('hashchange', () => {
    clearTransient();
    const result = $('report-result');
    result.textContent = '';
    result.hidden = true;
    closeReportDialog();
    refresh({ navigated: true });
  });
  if (!location.hash || location.hash === '#' || location.hash === '#/') {
    history.replaceState(null, '', '#/chats');
  }
  refresh({ navigated: true });
  connectEvents();
}

start();
