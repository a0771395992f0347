/* The reports pages: deleting asks first; the form shows only the fields the chosen frequency
   and the chosen analytics report use (without scripts every field shows and nothing is
   asked). */
(function () {
  "use strict";
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) { event.preventDefault(); }
    });
  });
  var frequency = document.getElementById("frequency");
  if (!frequency) { return; }
  function show() {
    ["once", "weekly", "monthly"].forEach(function (kind) {
      document.querySelectorAll(".when-" + kind).forEach(function (field) {
        field.hidden = frequency.value !== kind;
      });
    });
  }
  frequency.addEventListener("change", show);
  show();
  var analytics = document.getElementById("analytics");
  function showOptions() {
    document.querySelectorAll("[data-for-analytics]").forEach(function (field) {
      field.hidden = analytics.value !== field.dataset.forAnalytics;
    });
  }
  analytics.addEventListener("change", showOptions);
  showOptions();
})();
