// Le Chat's shared script: small progressive enhancements; every form also works without it.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  // The language switcher applies on change (its button is for browsers without JavaScript).
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });

  // The page's CSRF token, for scripts that send requests (header X-CSRF-Token).
  window.galerne = window.galerne || {};
  window.galerne.csrfToken = function () {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  };
})();
