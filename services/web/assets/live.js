// HENDU's one script. The pages work without it; it adds:
// - the viewer's time zone, told to the server in a cookie (pages are in
//   UTC until then: from the page after the first one);
// - live plays on the dashboard: a WebSocket to /live that sends every new
//   play the viewer may see; it reconnects with backoff and asks for what
//   it missed (after=<last play shown>), so nothing is lost while away;
// - the progress of an upload on the catalogue page (the form is sent as
//   without the script, the page it leads to is then shown).
(function () {
  "use strict";
  var zone = String(-new Date().getTimezoneOffset());
  if (document.cookie.split("; ").indexOf("hendu_tz=" + zone) < 0) {
    document.cookie = "hendu_tz=" + zone + "; path=/; max-age=31536000; samesite=lax";
  }

  function start() {
    var table = document.getElementById("live-plays");
    if (!table || !window.WebSocket) return;
    var body = table.tBodies[0];
    var after = Number(table.getAttribute("data-after")) || 0;
    var wait = 1000;
    var status = document.createElement("p");
    status.className = "live-status";
    status.setAttribute("role", "status");
    table.parentNode.insertBefore(status, table);

    function cell(row, text, href) {
      var td = row.insertCell(-1);
      if (href) {
        var a = document.createElement("a");
        a.href = href;
        a.textContent = text;
        td.appendChild(a);
      } else {
        td.textContent = text;
      }
      return td;
    }

    // Ids shown: plays are committed out of id order, so a catch-up sends
    // a little from before the last one, and each is shown once.
    var shown = {};
    for (var i = 0; i < body.rows.length; i++) {
      shown[body.rows[i].getAttribute("data-play")] = true;
    }

    function show(play) {
      if (play.reload) {
        location.reload();
        return;
      }
      if (shown[play.id]) return;
      shown[play.id] = true;
      after = Math.max(after, play.id);
      table.setAttribute("data-after", String(after));
      if (!table.hasAttribute("data-first-live")) {
        // When the first live play was shown (the browser test reads it).
        table.setAttribute("data-first-live", play.id + " " + Date.now());
      }
      var row = body.insertRow(0);
      row.className = "new";
      row.setAttribute("data-play", String(play.id));
      cell(row, play.start, play.url);
      cell(row, play.track);
      cell(row, play.source);
      cell(row, play.location);
      cell(row, play.played).className = "num";
      while (body.rows.length > 50) body.deleteRow(-1);
    }

    function connect() {
      var scheme = location.protocol === "https:" ? "wss://" : "ws://";
      var ws = new WebSocket(scheme + location.host + "/live?after=" + after);
      ws.onopen = function () {
        wait = 1000;
        status.textContent = table.getAttribute("data-live") || "Live";
        status.className = "live-status on";
      };
      ws.onmessage = function (e) {
        try { show(JSON.parse(e.data)); } catch (err) { /* not a play */ }
      };
      ws.onclose = function () {
        status.textContent = table.getAttribute("data-offline") || "Reconnecting…";
        status.className = "live-status off";
        setTimeout(connect, wait + Math.random() * wait);
        wait = Math.min(wait * 2, 30000);
      };
    }
    connect();
  }

  function uploads() {
    var form = document.getElementById("upload");
    if (!form || !window.FormData || !window.XMLHttpRequest || !window.DOMParser) return;
    var bar = document.getElementById("upload-progress");
    var status = document.getElementById("upload-status");
    var button = form.querySelector("button[type=submit]");
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      button.disabled = true;
      bar.hidden = false;
      bar.value = 0;
      xhr.upload.onprogress = function (p) {
        if (!p.lengthComputable) return;
        var percent = Math.floor((100 * p.loaded) / p.total);
        bar.value = percent;
        status.textContent = form.getAttribute("data-sending") + " " + percent + " %";
      };
      xhr.upload.onload = function () {
        bar.removeAttribute("value"); // indeterminate while fingerprinted
        status.textContent = form.getAttribute("data-working");
      };
      xhr.onload = function () {
        var to = xhr.responseURL || "";
        if (to && to.split("#")[0] !== form.action) {
          location.href = to; // redirected: the catalogue with its notice
          return;
        }
        // A refusal: its page, in place of this one's content.
        var page = new DOMParser().parseFromString(xhr.responseText, "text/html");
        var main = page.getElementById("main");
        if (main) {
          document.getElementById("main").replaceWith(main);
          document.title = page.title;
          uploads();
        }
      };
      xhr.onerror = function () {
        button.disabled = false;
        bar.hidden = true;
        status.textContent = form.getAttribute("data-failed");
      };
      xhr.send(new FormData(form));
    });
  }

  function ready() {
    start();
    uploads();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", ready);
  } else {
    ready();
  }
})();
