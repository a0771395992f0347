/* ModuleExtendedCDR Analytics page: the filter form, and the chart drawn from the report's JSON
   (the same as api/v1/stats/<report>). Chart.js draws text on the canvas, never as HTML. */
(function () {
  "use strict";
  var form = document.getElementById("analytics-filters");
  if (!form) { return; }
  var base = form.getAttribute("action");

  $(".ui.dropdown").dropdown({ clearable: true, fullTextSearch: true });

  // Period: a named one applies at once; "custom" shows the dates.
  $(form.elements.period).on("change", function () {
    var custom = this.value === "custom";
    $(".custom-period").toggleClass("hidden", !custom);
    if (!custom) { form.elements.from.value = ""; form.elements.to.value = ""; submit(); }
  });
  if (form.elements.grain) { $(form.elements.grain).on("change", submit); }

  function submit() {
    // Send only the fields that are set: short, shareable URLs.
    var data = new FormData(form), query = new URLSearchParams();
    data.forEach(function (value, name) { if (value !== "") { query.append(name, value); } });
    if (data.get("period") === "custom") { query.delete("period"); }
    location.href = base + "?" + query.toString();
  }
  form.addEventListener("submit", function (event) { event.preventDefault(); submit(); });

  var print = document.querySelector(".analytics-tools .print");
  if (print) { print.addEventListener("click", function () { window.print(); }); }

  var source = document.getElementById("report-data");
  var canvas = document.getElementById("report-chart");
  if (!source || !canvas || !window.Chart) { return; }
  var report = JSON.parse(source.textContent);
  var colours = ["#2185d0", "#db2828", "#21ba45", "#f2711c", "#a333c8", "#00b5ad", "#fbbd08",
                 "#e03997", "#a5673f", "#767676"];
  var line = report.chart.type === "line";
  var stacked = !!report.chart.stacked;
  var chart = new Chart(canvas, {
    type: report.chart.type,
    data: {
      labels: report.chart.labels,
      datasets: report.chart.series.map(function (series, i) {
        var colour = colours[i % colours.length];
        return {
          label: series.title, data: series.values, backgroundColor: colour, borderColor: colour,
          borderWidth: line ? 2 : 0, pointRadius: line ? 2 : 0, tension: 0.2,
          // The period before is a dashed line under the current one.
          borderDash: series.key === "previous_calls" ? [6, 4] : []
        };
      })
    },
    options: {
      animation: false, responsive: true, maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      scales: {
        x: { stacked: stacked },
        y: { stacked: stacked, beginAtZero: true, ticks: { precision: 0 } }
      },
      plugins: { legend: { position: "bottom" } }
    }
  });
  // A printed page is narrower than the screen: draw the chart for it.
  window.addEventListener("beforeprint", function () { chart.resize(); });
  window.addEventListener("afterprint", function () { chart.resize(); });
})();
