// Keeps the page current without reloading it: polls the page's JSON every
// two seconds, swaps in the fresh fragment, and draws the numbers over time.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var stamp = document.getElementById("updated");
  var samples = [];
  var MAX_SAMPLES = 90;

  // Every action that cannot be taken back asks first.
  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  function seriesValue(name, data) {
    if (!data) { return null; }
    if (name === "waiting") { return data.waiting; }
    if (name === "handed") {
      var counts = data.counts || {};
      var total = 0;
      ["sent", "delivered", "opened", "clicked", "bounced", "complained"].forEach(function (k) {
        total += counts[k] || 0;
      });
      return total;
    }
    return null;
  }

  function draw(svg) {
    var ns = "http://www.w3.org/2000/svg";
    var width = Number(svg.getAttribute("width")), height = Number(svg.getAttribute("height"));
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    var top = Math.max.apply(null, samples.concat([1]));
    // The samples so far span the whole width: the picture is readable from the first poll.
    var points = samples.map(function (value, i) {
      var x = samples.length < 2 ? 0 : (i * width) / (samples.length - 1);
      return x.toFixed(1) + "," + (height - 20 - (value * (height - 30)) / top).toFixed(1);
    });
    var axis = document.createElementNS(ns, "line");
    axis.setAttribute("x1", "0");
    axis.setAttribute("x2", String(width));
    axis.setAttribute("y1", String(height - 20));
    axis.setAttribute("y2", String(height - 20));
    axis.setAttribute("stroke", "#c5ced8");
    svg.appendChild(axis);
    var line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", "#3b7dd8");
    line.setAttribute("stroke-width", "2");
    svg.appendChild(line);
    var label = document.createElementNS(ns, "text");
    label.setAttribute("x", "0");
    label.setAttribute("y", String(height - 2));
    label.setAttribute("font-size", "13");
    label.textContent = "now " + samples[samples.length - 1] + ", peak " + top +
      " (last " + samples.length * 2 + " s)";
    svg.appendChild(label);
  }

  function refresh() {
    // Never replace a form while someone is about to use it.
    if (document.activeElement && live.contains(document.activeElement) &&
        document.activeElement.tagName === "INPUT") {
      return;
    }
    // From the origin, never the document's URL: one carrying user:password
    // (http://user:pass@host/) would make fetch refuse the request.
    var url = new URL(live.getAttribute("data-api"), window.location.origin);
    fetch(url.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) { throw new Error(String(response.status)); }
        return response.json();
      })
      .then(function (reply) {
        live.innerHTML = reply.html;
        var svg = document.getElementById("rates");
        if (svg) {
          var value = seriesValue(svg.getAttribute("data-series"), reply.data);
          if (value !== null) {
            samples.push(value);
            if (samples.length > MAX_SAMPLES) { samples.shift(); }
            draw(svg);
          }
        }
        stamp.textContent = "updated " + new Date().toLocaleTimeString();
        stamp.setAttribute("data-polls", String(Number(stamp.getAttribute("data-polls") || 0) + 1));
      })
      .catch(function (error) {
        stamp.textContent = "not updated: " + error.message;
      });
  }

  refresh();
  window.setInterval(refresh, 2000);
})();
