/*
 * Tickwatch service worker (scope "/").
 *
 * Why it exists: the app must open from the home screen with the network down
 * (the shell, not live data: prices need the /_event websocket), and alerts must
 * reach a closed tab as web-push notifications.
 *
 * Caching, in short:
 *   - install: pre-cache "/" plus the hashed /assets/ files its HTML names, the
 *     manifest and the icons, so the very first visit is enough to work offline
 *     (the page that registered us loaded its scripts before we controlled it);
 *   - navigations: network first, cached copy (or the "/" shell) when offline;
 *   - static files (/assets/*, icons, manifest, pwa.js): stale-while-revalidate;
 *   - never touched: non-GET, other origins, /_event, /_upload, /api, /auth,
 *     /ping, /_health, this script. Those go to the network as if we were absent.
 * Only cache names starting with PREFIX belong to us; activate deletes ours that
 * are not the current VERSION. Bump VERSION when this file's logic changes.
 */
"use strict";

const VERSION = "v1";
const PREFIX = "tickwatch-";
const SHELL_CACHE = `${PREFIX}shell-${VERSION}`;
const RUNTIME_CACHE = `${PREFIX}runtime-${VERSION}`;
const RUNTIME_MAX_ENTRIES = 200; // old hashed builds would otherwise pile up
const SHELL_URL = "/";
const ICON = "/icon-192.png";
const BADGE = "/badge-72.png";
const STATIC_FILES = [
  "/manifest.json",
  "/icon-192.png",
  "/icon-512.png",
  "/icon-maskable-512.png",
  BADGE,
  "/favicon.ico",
];
const STATIC_PATHS = new Set([...STATIC_FILES, "/pwa.js"]);
const STATIC_PREFIX = "/assets/";
// Paths (and everything under them) the worker never answers or caches:
// the websocket, uploads, JSON routes, sign-in flows and health probes.
const BYPASS = ["/_event", "/_upload", "/api", "/auth", "/ping", "/_health", "/sw.js"];
const SHELL_ASSET = /["'(](\/assets\/[\w.\-/]+\.(?:js|mjs|css|woff2?))(?=["')])/g;
const DEFAULT_TITLE = "Tickwatch";

function bypassed(pathname) {
  return BYPASS.some((p) => pathname === p || pathname.startsWith(`${p}/`));
}

function cacheable(response, htmlOnly) {
  if (!response || response.status !== 200 || response.type !== "basic") return false;
  if ((response.headers.get("cache-control") || "").includes("no-store")) return false;
  if (!htmlOnly) return true;
  return (response.headers.get("content-type") || "").startsWith("text/html");
}

async function trim(cache) {
  const keys = await cache.keys(); // insertion order: the oldest first
  for (let i = 0; i < keys.length - RUNTIME_MAX_ENTRIES; i += 1) {
    await cache.delete(keys[i]);
  }
}

async function store(cacheName, key, response) {
  const cache = await caches.open(cacheName);
  await cache.put(key, response);
  if (cacheName === RUNTIME_CACHE) await trim(cache);
}

async function precache() {
  const cache = await caches.open(SHELL_CACHE);
  await cache.addAll(STATIC_FILES);
  const shell = await fetch(SHELL_URL, { cache: "no-cache", credentials: "same-origin" });
  if (!cacheable(shell, true)) return;
  const html = await shell.clone().text();
  await cache.put(SHELL_URL, shell);
  const assets = [...new Set([...html.matchAll(SHELL_ASSET)].map((m) => m[1]))];
  // One missing chunk must not fail the install; that file is cached at run time.
  await Promise.all(
    assets.map((path) =>
      fetch(path, { credentials: "same-origin" })
        .then((res) => (cacheable(res, false) ? cache.put(path, res) : undefined))
        .catch(() => undefined),
    ),
  );
}

self.addEventListener("install", (event) => {
  event.waitUntil(precache().then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      const keep = new Set([SHELL_CACHE, RUNTIME_CACHE]);
      const names = await caches.keys();
      await Promise.all(
        names.filter((n) => n.startsWith(PREFIX) && !keep.has(n)).map((n) => caches.delete(n)),
      );
      await self.clients.claim();
    })(),
  );
});

async function networkFirst(event, url) {
  const request = event.request;
  const key = url.origin + url.pathname; // one copy per page, whatever its query
  try {
    const response = await fetch(request);
    if (cacheable(response, true)) {
      const target = url.pathname === SHELL_URL ? SHELL_CACHE : RUNTIME_CACHE;
      event.waitUntil(store(target, key, response.clone()));
    }
    return response;
  } catch (error) {
    const cached =
      (await caches.match(key, { ignoreVary: true })) ||
      (await caches.match(SHELL_URL, { ignoreVary: true }));
    if (cached) return cached;
    throw error;
  }
}

async function staleWhileRevalidate(event) {
  const request = event.request;
  const cached = await caches.match(request, { ignoreVary: true });
  const network = fetch(request).then((response) => {
    if (cacheable(response, false)) {
      event.waitUntil(store(RUNTIME_CACHE, request, response.clone()));
    }
    return response;
  });
  if (cached) {
    event.waitUntil(network.catch(() => undefined));
    return cached;
  }
  return network;
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET" || request.headers.has("range")) return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin || bypassed(url.pathname)) return;
  if (request.mode === "navigate") {
    event.respondWith(networkFirst(event, url));
  } else if (url.pathname.startsWith(STATIC_PREFIX) || STATIC_PATHS.has(url.pathname)) {
    event.respondWith(staleWhileRevalidate(event));
  }
});

/** A same-origin absolute URL for `value`, or the start page: a push payload
 * must not be able to send a click to another site. */
function sameOriginUrl(value) {
  try {
    const url = new URL(typeof value === "string" && value ? value : "/", self.location.origin);
    if (url.origin === self.location.origin) return url.href;
  } catch (_) {
    /* fall through to the start page */
  }
  return new URL("/", self.location.origin).href;
}

function text(value, limit) {
  return typeof value === "string" ? value.slice(0, limit) : "";
}

function parsePush(data) {
  let payload = {};
  if (data) {
    try {
      payload = data.json();
    } catch (_) {
      payload = { body: data.text() };
    }
  }
  if (!payload || typeof payload !== "object") payload = {};
  return {
    title: text(payload.title, 200) || DEFAULT_TITLE,
    body: text(payload.body, 1000),
    tag: text(payload.tag, 200),
    url: sameOriginUrl(payload.url),
  };
}

self.addEventListener("push", (event) => {
  const alert = parsePush(event.data);
  const options = {
    body: alert.body,
    data: { url: alert.url },
    icon: ICON,
    badge: BADGE,
    renotify: false,
  };
  // The same tag replaces the earlier notification instead of stacking a duplicate.
  if (alert.tag) options.tag = alert.tag;
  event.waitUntil(self.registration.showNotification(alert.title, options));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const target = sameOriginUrl(event.notification.data && event.notification.data.url);
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      const open = windows.find((client) => client.url === target);
      if (open && "focus" in open) return open.focus();
      return self.clients.openWindow(target);
    })(),
  );
});
