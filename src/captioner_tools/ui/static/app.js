// Captioner's gallery: the run's token, keyboard navigation, edits and re-captions.
// Loaded from /static only (the Content-Security-Policy allows no inline script).
(function () {
  "use strict";
  var KEY = "captioner-token";

  function token() {
    var meta = document.querySelector('meta[name="captioner-token"]');
    if (meta && meta.content) { sessionStorage.setItem(KEY, meta.content); }
    return sessionStorage.getItem(KEY) || "";
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Captioner-Token": token() },
      body: JSON.stringify(body)
    }).then(function (resp) {
      return resp.json().catch(function () { return {}; }).then(function (data) {
        if (!resp.ok) { throw new Error(data.error || ("HTTP " + resp.status)); }
        return data;
      });
    });
  }

  function say(id, text) {
    var el = document.getElementById(id);
    if (el) { el.textContent = text; }
  }

  function cards() { return Array.prototype.slice.call(document.querySelectorAll(".card-link")); }

  function columns(list) {
    if (list.length < 2) { return 1; }
    var top = list[0].getBoundingClientRect().top, n = 0;
    for (var i = 0; i < list.length && list[i].getBoundingClientRect().top === top; i++) { n++; }
    return Math.max(n, 1);
  }

  function typing(el) {
    return el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT");
  }

  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    var active = document.activeElement;
    if (ev.key === "Escape") {
      if (typing(active)) { active.blur(); return; }
      var back = document.getElementById("back");
      if (back) { ev.preventDefault(); window.location.href = back.href; }
      return;
    }
    if (typing(active)) { return; }
    if (ev.key === "/") {
      var q = document.getElementById("q");
      if (q) { ev.preventDefault(); q.focus(); q.select(); }
      return;
    }
    if (ev.key === "e") {
      var text = document.getElementById("caption-text");
      if (text) { ev.preventDefault(); text.focus(); return; }
      if (active && active.classList.contains("card-link")) {
        ev.preventDefault(); window.location.href = active.href + "#edit";
      }
      return;
    }
    var moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: "down", ArrowUp: "up" };
    if (!(ev.key in moves)) { return; }
    var list = cards();
    if (!list.length) { return; }
    var at = list.indexOf(active), step = moves[ev.key];
    if (step === "down") { step = columns(list); }
    if (step === "up") { step = -columns(list); }
    var next = at < 0 ? 0 : Math.min(Math.max(at + step, 0), list.length - 1);
    ev.preventDefault();
    list[next].focus();
  });

  function recaption(button, body, human) {
    var plan = Object.assign({}, body, { confirm: false, replace_human: false });
    post("/api/recaption", plan).then(function (p) {
      var replace = false;
      if (p.human > 0) {
        replace = window.confirm(p.human + " caption(s) were written by a person. Replace them too?");
      }
      var count = replace ? p.planned + p.human : p.planned;
      if (!count) { say("recaption-result", "Nothing to re-caption."); return null; }
      var cost = (count * p.price_usd).toFixed(4);
      if (!window.confirm("Re-caption " + count + " image(s) for about $" + cost + "?")) { return null; }
      return post("/api/recaption", Object.assign({}, body, { confirm: true, replace_human: replace }));
    }).then(function (done) {
      if (done) { say("recaption-result", "Queued " + done.enqueued + " re-caption(s): PENDING until done."); }
    }).catch(function (err) { say("recaption-result", "Not queued: " + err.message); });
  }

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (form.id !== "edit") { return; }
    ev.preventDefault();
    var text = document.getElementById("caption-text").value;
    post("/api/caption", {
      bucket: form.dataset.bucket, key: form.dataset.key,
      version_id: form.dataset.version || null, caption: text
    }).then(function (data) {
      say("edit-result", "Saved: caption by a person (tag " + data.row.tag_status + ").");
      var src = document.querySelector('[data-field="caption_source"]');
      if (src) { src.textContent = "human"; }
    }).catch(function (err) { say("edit-result", "Not saved: " + err.message); });
  });

  document.addEventListener("click", function (ev) {
    var el = ev.target;
    if (el.id === "recaption-one") {
      recaption(el, { objects: [{ bucket: el.dataset.bucket, key: el.dataset.key }] });
    } else if (el.id === "recaption-view") {
      recaption(el, { status: el.dataset.status, prefix: el.dataset.prefix, bucket: el.dataset.bucket });
    }
  });

  function ready() {
    token();
    if (window.location.hash === "#edit") {
      var text = document.getElementById("caption-text");
      if (text) { text.focus(); }
    }
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", ready); }
  else { ready(); }
})();
