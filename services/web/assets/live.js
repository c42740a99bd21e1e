// HENDU's one script. The pages work without it; it adds:
// - the viewer's time zone, told to the server in a cookie (pages are in
//   UTC until then: from the page after the first one);
// - live plays on the dashboard: a WebSocket to /live that sends every new
//   play the viewer may see; it reconnects with backoff and asks for what
//   it missed (after=<last play shown>), so nothing is lost while away;
// - station alerts (down, silent, back) on administrators' and operators'
//   pages, over the same socket (a page without plays asks for alerts alone);
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
    var alerts = document.getElementById("live-alerts");
    if ((!table && !alerts) || !window.WebSocket) return;
    var body = table ? table.tBodies[0] : { rows: [] };
    var after = table ? Number(table.getAttribute("data-after")) || 0 : 0;
    var wait = 1000;
    var status = document.createElement("p");
    status.className = "live-status";
    status.setAttribute("role", "status");
    if (table) table.parentNode.insertBefore(status, table);

    // A station went down or silent, or came back: the newest five.
    function alert(a) {
      if (!alerts) return;
      var line = document.createElement("p");
      line.className = "alert " + a.state;
      var link = document.createElement("a");
      link.href = a.url;
      link.textContent = a.text;
      line.appendChild(link);
      alerts.insertBefore(line, alerts.firstChild);
      while (alerts.childNodes.length > 5) alerts.removeChild(alerts.lastChild);
    }

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
      var ws = new WebSocket(scheme + location.host + "/live" + (table ? "?after=" + after : ""));
      ws.onopen = function () {
        wait = 1000;
        if (!table) return;
        status.textContent = table.getAttribute("data-live") || "Live";
        status.className = "live-status on";
      };
      ws.onmessage = function (e) {
        var m;
        try { m = JSON.parse(e.data); } catch (err) { return; }
        if (m.alert) alert(m.alert);
        else if (table) show(m);
      };
      ws.onclose = function () {
        if (table) {
          status.textContent = table.getAttribute("data-offline") || "Reconnecting…";
          status.className = "live-status off";
        }
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
