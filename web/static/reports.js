/* The report form: show only the fields the chosen frequency uses (all show without scripts). */
(function () {
  "use strict";
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
})();
