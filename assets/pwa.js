/*
 * Tickwatch PWA glue, loaded by <script src="/pwa.js" defer> from every page.
 *
 * An external file because the Content-Security-Policy runs no inline script
 * except the build's own. It does three things:
 *   1. registers /sw.js with scope "/" (after load, so it never slows the first paint);
 *   2. keeps Chrome's install offer for the app's own button (#install-app):
 *      <html data-tw-install="ready"> while the offer is usable, which the
 *      button's own CSS turns into "visible" (React can re-mount the navbar on
 *      every page, so state lives on <html>, and clicks are delegated);
 *   3. window.tickwatchPush.subscribe(vapidPublicKey?) / unsubscribe(): the web-push
 *      subscription, stored server-side through /api/push/subscriptions.
 */
(function () {
  "use strict";

  var INSTALL_ATTR = "data-tw-install";
  var SUBSCRIPTIONS = "/api/push/subscriptions";
  var deferredPrompt = null;

  function setInstallable(ready) {
    if (ready) document.documentElement.setAttribute(INSTALL_ATTR, "ready");
    else document.documentElement.removeAttribute(INSTALL_ATTR);
  }

  function installed() {
    var standalone = window.matchMedia && window.matchMedia("(display-mode: standalone)").matches;
    return Boolean(standalone || window.navigator.standalone === true);
  }

  window.addEventListener("beforeinstallprompt", function (event) {
    // Our button makes the offer; the browser's own mini-infobar would repeat it.
    event.preventDefault();
    if (installed()) return;
    deferredPrompt = event;
    setInstallable(true);
  });

  window.addEventListener("appinstalled", function () {
    deferredPrompt = null;
    setInstallable(false);
  });

  document.addEventListener("click", function (event) {
    var target = event.target;
    if (!deferredPrompt || !(target instanceof Element) || !target.closest("#install-app")) return;
    var offer = deferredPrompt;
    // An offer can be shown once; the browser fires a new beforeinstallprompt later.
    deferredPrompt = null;
    setInstallable(false);
    Promise.resolve()
      .then(function () {
        return offer.prompt();
      })
      .catch(function () {
        /* the browser withdrew the offer: nothing to show */
      });
  });

  if ("serviceWorker" in navigator) {
    var register = function () {
      navigator.serviceWorker
        .register("/sw.js", { scope: "/", updateViaCache: "none" })
        .catch(function (error) {
          console.warn("Tickwatch: service worker not registered:", error);
        });
    };
    if (document.readyState === "complete") register();
    else window.addEventListener("load", register, { once: true });
  }

  function base64UrlToBytes(value) {
    var padded = (value + "===".slice((value.length + 3) % 4)).replace(/-/g, "+").replace(/_/g, "/");
    var raw = window.atob(padded);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i += 1) bytes[i] = raw.charCodeAt(i);
    return bytes;
  }

  function sameBytes(buffer, bytes) {
    if (!buffer) return false;
    var view = new Uint8Array(buffer);
    if (view.length !== bytes.length) return false;
    for (var i = 0; i < view.length; i += 1) if (view[i] !== bytes[i]) return false;
    return true;
  }

  function failure(code, status, payload) {
    var error = new Error(code);
    error.status = status || 0;
    error.payload = payload || {};
    return error;
  }

  async function callServer(method, body) {
    var response = await fetch(SUBSCRIPTIONS, {
      method: method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    var payload = {};
    try {
      payload = await response.json();
    } catch (_) {
      payload = {};
    }
    if (!response.ok) throw failure(payload.error || "http_" + response.status, response.status, payload);
    return payload;
  }

  async function vapidKey(given) {
    if (given) return given;
    var response = await fetch("/api/push/vapid-public-key", { credentials: "same-origin" });
    if (!response.ok) throw failure("push_not_configured", response.status);
    return (await response.json()).key;
  }

  function supported() {
    return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
  }

  window.tickwatchPush = Object.freeze({
    supported: supported,

    /** Subscribe this browser and store it for the signed-in user. Resolves to
     * the server's {id, hint}; rejects with Error(code), code being the route's
     * "error" field (e.g. "signed_out") or "permission_denied" / "push_unsupported". */
    subscribe: async function (vapidPublicKey, label) {
      if (!supported()) throw failure("push_unsupported");
      var permission = await window.Notification.requestPermission();
      if (permission !== "granted") throw failure("permission_denied");
      var registration = await navigator.serviceWorker.ready;
      var key = base64UrlToBytes(await vapidKey(vapidPublicKey));
      var subscription = await registration.pushManager.getSubscription();
      if (subscription && !sameBytes(subscription.options.applicationServerKey, key)) {
        await subscription.unsubscribe(); // the server's key changed: the old one is useless
        subscription = null;
      }
      if (!subscription) {
        subscription = await registration.pushManager.subscribe({
          userVisibleOnly: true,
          applicationServerKey: key,
        });
      }
      var body = subscription.toJSON();
      if (label) body.label = String(label);
      return callServer("POST", body);
    },

    /** Remove this browser's subscription, server side first: if that fails the
     * browser keeps its subscription, so the user can simply try again. */
    unsubscribe: async function () {
      if (!supported()) return { removed: false };
      var registration = await navigator.serviceWorker.ready;
      var subscription = await registration.pushManager.getSubscription();
      if (!subscription) return { removed: false };
      var result = { removed: false };
      try {
        result = await callServer("DELETE", { endpoint: subscription.endpoint });
      } catch (error) {
        if (error.status !== 404) throw error; // 404: the server had already forgotten it
      }
      await subscription.unsubscribe();
      return result;
    },
  });

  // The channels page's "push on this device" button (#ch-push). Its state lives in
  // the service worker, so the page cannot do this itself; the outcome is shown in
  // the button's title and the page is reloaded to list the new channel.
  document.addEventListener("click", function (event) {
    var target = event.target;
    var button = target instanceof Element ? target.closest("#ch-push") : null;
    if (!button) return;
    button.setAttribute("aria-busy", "true");
    window.tickwatchPush
      .subscribe(undefined, navigator.platform || "")
      .then(function () {
        window.location.reload();
      })
      .catch(function (error) {
        button.setAttribute("data-error", String((error && error.message) || error));
      })
      .finally(function () {
        button.removeAttribute("aria-busy");
      });
  });
})();
