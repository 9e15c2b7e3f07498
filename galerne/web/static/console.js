// The console's script: copy buttons, revoke confirmations, the usage charts (Chart.js, shipped in
// static/chart.umd.js) and the playground. Pages and forms work without it; charts and the playground need it.
(function () {
  "use strict";

  // Copy buttons: data-copy names the element whose text is copied.
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var source = document.getElementById(button.getAttribute("data-copy"));
      if (!source || !navigator.clipboard) { return; }
      navigator.clipboard.writeText(source.textContent).then(function () {
        button.classList.add("copied");
        setTimeout(function () { button.classList.remove("copied"); }, 1500);
      });
    });
  });

  // A new key's page came from a POST: reloading it must not create another key (nor show this one again).
  var replaced = document.querySelector("[data-replace-url]");
  if (replaced && window.history.replaceState) {
    window.history.replaceState(null, "", replaced.getAttribute("data-replace-url"));
  }

  // Forms that undo something ask first (revoking a key breaks the programs that use it).
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });

  var PALETTE = ["#d4490f", "#2457d6", "#1d8a4e", "#8a3ffc", "#b28600", "#00838f", "#c2185b", "#5d5d6b"];

  // Usage: one stacked bar chart of tokens and one of cost, by day and model, from the JSON endpoint.
  var charts = document.getElementById("usage-charts");
  if (charts && window.Chart) {
    fetch(charts.getAttribute("data-url"), { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) { return response.json(); })
      .then(function (usage) {
        draw("chart-tokens", usage, "total_tokens", charts.getAttribute("data-label-tokens"));
        draw("chart-cost", usage, "cost", charts.getAttribute("data-label-cost"));
        charts.setAttribute("data-loaded", "true");
      });
  }

  function draw(canvasId, usage, field, label) {
    var models = [];
    usage.by_day.forEach(function (row) { if (models.indexOf(row.model) < 0) { models.push(row.model); } });
    var datasets = models.map(function (model, index) {
      var values = usage.days.map(function (day) {
        var total = 0;
        usage.by_day.forEach(function (row) { if (row.day === day && row.model === model) { total += row[field]; } });
        return total;
      });
      return { label: model, data: values, backgroundColor: PALETTE[index % PALETTE.length], stack: "usage" };
    });
    new window.Chart(document.getElementById(canvasId), {
      type: "bar",
      data: { labels: usage.days, datasets: datasets },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, title: { display: true, text: label } } },
        plugins: { legend: { position: "bottom" } }
      }
    });
  }

  // The playground: one chat completion through /console/api/playground, shown raw with its curl.
  var playground = document.getElementById("playground-form");
  if (playground) {
    playground.addEventListener("submit", function (event) {
      event.preventDefault();
      var error = document.getElementById("playground-error");
      error.hidden = true;
      var form = playground.elements;
      var messages = [];
      if (form.system.value.trim()) { messages.push({ role: "system", content: form.system.value }); }
      messages.push({ role: "user", content: form.prompt.value });
      var request = { model: form.model.value, messages: messages,
                      temperature: Number(form.temperature.value), max_tokens: Number(form.max_tokens.value) };
      try {
        if (form.schema.value.trim()) {
          request.response_format = { type: "json_schema",
            json_schema: { name: "answer", schema: JSON.parse(form.schema.value), strict: true } };
        }
        if (form.tools.value.trim()) { request.tools = JSON.parse(form.tools.value); }
      } catch (exc) {
        error.textContent = exc.message;
        error.hidden = false;
        return;
      }
      var output = document.getElementById("playground-response");
      output.textContent = "…";
      fetch("/console/api/playground", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": window.galerne.csrfToken() },
        body: JSON.stringify({ project: playground.getAttribute("data-project"), request: request })
      }).then(function (response) {
        return response.json().then(function (body) { return { status: response.status, body: body }; });
      }).then(function (answer) {
        var shown = answer.status === 200 ? answer.body.response : answer.body;
        output.textContent = (answer.status === 200 ? "" : "HTTP " + answer.status + "\n") + JSON.stringify(shown, null, 2);
        document.getElementById("playground-curl").textContent = answer.status === 200 ? answer.body.curl : "";
        playground.setAttribute("data-status", String(answer.status));
      });
    });
  }
})();
