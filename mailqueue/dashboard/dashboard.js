// Keeps the page current without reloading it: polls the page's JSON every
// two seconds and swaps in the fresh fragment. Its pictures of the last hour
// are drawn by the server from the per-minute figures kept in Redis, so they
// are whole from the first view.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var stamp = document.getElementById("updated");

  // Every action that cannot be taken back asks first.
  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

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
