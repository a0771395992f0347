/* ModuleExtendedCDR history page: filter controls, details, "show more", live updates. */
(function () {
  "use strict";
  var form = document.getElementById("filters");
  var body = document.getElementById("calls");
  if (!form || !body) { return; }
  var base = form.getAttribute("action");

  $(".ui.dropdown").dropdown({ clearable: true, fullTextSearch: true });
  $(".ui.checkbox").checkbox();

  // Period: presets apply at once; "custom" shows the dates.
  $(form.elements.period).on("change", function () {
    var custom = this.value === "custom";
    $(".custom-period").toggleClass("hidden", !custom);
    if (!custom) { form.elements.from.value = ""; form.elements.to.value = ""; submit(); }
  });

  function submit() {
    // Send only the fields that are set: short, shareable URLs.
    var data = new FormData(form), query = new URLSearchParams();
    var defaults = { tab: "all", tag_mode: "any" };
    data.forEach(function (value, name) { if (value !== "" && value !== defaults[name]) { query.append(name, value); } });
    if (data.get("period") === "custom") { query.delete("period"); }
    location.href = base + "?" + (query.toString() || "period=today");
  }
  form.addEventListener("submit", function (event) { event.preventDefault(); submit(); });

  // Clicking a number searches for it; clicking elsewhere on a row opens its details.
  body.addEventListener("click", function (event) {
    var number = event.target.closest("a.number");
    if (number) {
      event.preventDefault();
      form.elements.number.value = number.dataset.number;
      submit();
      return;
    }
    var play = event.target.closest("button.play");
    var row = event.target.closest("tr.call");
    if (!row || event.target.closest("a, audio, .details")) { return; }
    toggleDetails(row, !!play);
  });

  function toggleDetails(row, autoplay) {
    var next = row.nextElementSibling;
    if (next && next.classList.contains("details")) {
      if (!autoplay) { next.remove(); }
      return;
    }
    var url = base + "calls/" + encodeURIComponent(row.dataset.linkedid) + "/details";
    fetch(url, { credentials: "same-origin" }).then(function (reply) {
      if (!reply.ok) { throw new Error(reply.status); }
      return reply.text();
    }).then(function (html) {
      var details = document.createElement("tr");
      details.className = "details";
      details.innerHTML = '<td colspan="' + row.children.length + '"></td>';
      details.firstChild.innerHTML = html;
      row.after(details);
      var audio = details.querySelector("audio");
      if (autoplay && audio) { audio.play(); }
    });
  }

  // Show more: the next page by keyset cursor.
  var more = document.querySelector(".show-more");
  if (more) {
    more.addEventListener("click", function (event) {
      event.preventDefault();
      var query = new URLSearchParams(body.dataset.query);
      query.set("cursor", more.dataset.cursor);
      fetch(base + "rows?" + query, { credentials: "same-origin" })
        .then(function (reply) { return reply.json(); })
        .then(function (page) {
          body.insertAdjacentHTML("beforeend", page.html);
          if (page.next_cursor) { more.dataset.cursor = page.next_cursor; } else { more.remove(); }
        });
    });
  }

  // Exports: small ones download at once; big ones are built in the background while a
  // progress bar shows how far, then the file downloads.
  var exports = document.querySelector(".buttons.export");
  if (exports && Number(exports.dataset.count) >= Number(exports.dataset.backgroundFrom)) {
    exports.addEventListener("click", function (event) {
      var button = event.target.closest("a[data-format]");
      if (!button) { return; }
      event.preventDefault();
      var body = new URLSearchParams({ format: button.dataset.format, query: exports.dataset.query,
        csrf_token: document.querySelector('meta[name="csrf-token"]').content });
      fetch(exports.dataset.jobs, { method: "POST", body: body, credentials: "same-origin" })
        .then(function (reply) { return reply.json(); })
        .then(function (job) { if (job.error) { showProgress(job.error); } else { watch(job); } });
    });
  }
  function showProgress(text, done, total) {
    var box = $(".export-progress").removeClass("hidden");
    box.find(".text").text(text);
    box.find("progress").attr("max", total || 1).attr("value", done || 0);
    return box;
  }
  function watch(job) {
    fetch(job.status, { credentials: "same-origin" })
      .then(function (reply) { return reply.json(); })
      .then(function (state) {
        if (state.error) { showProgress(state.error); return; }
        var box = showProgress(state.done.toLocaleString() + " / " + state.total.toLocaleString(),
                               state.done, state.total);
        if (state.ready) {
          box.find("a.file").removeClass("hidden").attr("href", state.file).text("⬇");
          location.href = state.file;
          return;
        }
        setTimeout(function () { watch(job); }, 1000);
      });
  }

  // Live: nginx tells every open page that calls changed (its channel carries only the
  // history's revision number, no call data); the page then asks `updates` what changed for
  // its filter and its user since the revision it shows. No server thread waits per page.
  var live = document.getElementById("live");
  var changes = null, asking = false, askAgain = false, askTimer = null;
  var ASK_SPREAD = 300;    // ms: every open page is told at once; each asks within this
  live.checked = localStorage.getItem("extcdr-live") !== "off";
  function follow() {
    if (changes) { changes.close(); changes = null; }
    clearTimeout(askTimer);
    askTimer = null;
    $(".ui.checkbox.live").toggleClass("paused", !live.checked);
    if (!live.checked || new URLSearchParams(location.search).has("cursor") ||
        "badFilter" in body.dataset) { return; }
    changes = new EventSource(base + "changes");
    changes.onopen = ask;               // (re)connected: what changed while it was not
    changes.onmessage = function (event) {
      if (Number(event.data) !== Number(body.dataset.revision)) { askSoon(); }
    };
  }
  // Spread, so that two hundred pages do not queue in front of everyone else's requests.
  function askSoon() {
    if (askTimer === null) {
      askTimer = setTimeout(function () { askTimer = null; ask(); }, Math.random() * ASK_SPREAD);
    }
  }
  function ask() {
    if (asking) { askAgain = true; return; }
    asking = true;
    var query = new URLSearchParams(body.dataset.query), now = document.getElementById("now");
    query.set("since", body.dataset.revision);
    if (now) { query.set("now", now.dataset.key); }
    fetch(base + "updates?" + query, { credentials: "same-origin" })
      .then(function (reply) { return reply.ok ? reply.json() : null; })
      .then(function (update) {
        if (!update || !changes) { return; }    // failed, or paused meanwhile
        if (update.reload) { location.reload(); return; }
        body.dataset.revision = update.revision;
        update.gone.forEach(function (linkedid) { removeRow(rowOf(linkedid)); });
        update.calls.forEach(showCall);
        Object.keys(update.counts).forEach(function (tab) {
          $(".tabs .tab-" + tab + " .count").text(update.counts[tab]);
        });
        if (update.now !== undefined) { showNow(update.now); }
      })
      .catch(function () {})            // the next change asks again
      .finally(function () {
        asking = false;
        if (askAgain) { askAgain = false; ask(); }
      });
  }
  function rowOf(linkedid) {
    return body.querySelector('tr.call[data-linkedid="' + CSS.escape(linkedid) + '"]');
  }
  function removeRow(row) {
    if (!row) { return null; }
    var details = row.nextElementSibling;
    if (details && details.classList.contains("details")) { details.remove(); } else { details = null; }
    row.remove();
    return details;
  }
  // Rows stay newest first (start, then id, as the server pages them): a call that changed
  // replaces its own row, a new or late-finishing one goes where its start puts it.
  function newer(start, id, row) {
    var rowStart = Number(row.dataset.start), rowId = Number(row.dataset.id);
    return start > rowStart || (start === rowStart && id > rowId);
  }
  function showCall(call) {
    var template = document.createElement("tbody");
    template.innerHTML = call.html.trim();
    var row = template.querySelector("tr.call");
    if (!row) { return; }
    var shown = rowOf(call.linkedid);
    if (shown && Number(shown.dataset.start) === call.start && Number(shown.dataset.id) === call.id) {
      // Where it was: replaced in place, its open details untouched (moving them would close
      // a tag menu someone is choosing from).
      shown.replaceWith(row);
      row.classList.add("fresh");
      return;
    }
    var details = removeRow(shown);
    var rows = body.querySelectorAll("tr.call"), before = null;
    for (var i = 0; i < rows.length && !before; i++) {
      if (newer(call.start, call.id, rows[i])) { before = rows[i]; }
    }
    if (before) {
      before.before(row);
    } else if (document.querySelector(".show-more")) {
      return;                      // older than every row shown: it comes with "show more"
    } else {
      body.append(row);
    }
    if (details) { row.after(details); }
    row.classList.add("fresh");
    $(".ui.message.empty").remove();
  }

  // Calls in progress: replaced as a whole; the timers tick here, in the PBX's time. A long
  // list shows its first calls until the user unfolds it (and stays unfolded on updates).
  var clockOffset = 0, nowUnfolded = false;
  function showNow(html) {
    var now = document.getElementById("now");
    if (!now) { return; }
    now.outerHTML = html;
    fold();
    tick();
  }
  function fold() {
    var now = document.getElementById("now"), more = now && now.querySelector(".more-now");
    if (!now) { return; }
    now.querySelector(".now-calls").classList.toggle("folded", !nowUnfolded);
    if (more) { more.textContent = nowUnfolded ? more.dataset.less : more.dataset.more; }
  }
  document.addEventListener("click", function (event) {
    if (!event.target.closest("#now .more-now")) { return; }
    nowUnfolded = !nowUnfolded;
    fold();
  });
  function tick() {
    var now = document.getElementById("now");
    if (!now) { return; }
    if (now.dataset.serverNow) {
      clockOffset = Number(now.dataset.serverNow) - Date.now();
      delete now.dataset.serverNow;
    }
    now.querySelectorAll(".timer[data-since]").forEach(function (timer) {
      var seconds = Math.max(0, Math.floor((Date.now() + clockOffset - Number(timer.dataset.since)) / 1000));
      var h = Math.floor(seconds / 3600), m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
      timer.textContent = (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(s).padStart(2, "0");
    });
  }
  tick();
  setInterval(tick, 1000);
  live.addEventListener("change", function () {
    localStorage.setItem("extcdr-live", live.checked ? "on" : "off");
    follow();
  });
  follow();
})();

/* Working with calls: comments, tags, a link to a call, deleting (admins). Every change goes
   through the role-checked API with the page's CSRF token; texts come from the page. */
(function () {
  "use strict";
  var body = document.getElementById("calls"), form = document.getElementById("filters");
  if (!body || !form) { return; }
  var base = form.getAttribute("action");
  var modal = document.querySelector(".delete-confirm");
  var words = modal ? modal.dataset : {};
  var token = document.querySelector('meta[name="csrf-token"]').content;
  var actionWords = { added: words.actionAdded, edited: words.actionEdited,
                      deleted: words.actionDeleted };

  function call(method, url, data) {
    var options = { method: method, credentials: "same-origin",
      headers: { "X-CSRF-Token": token, "Content-Type": "application/json" } };
    if (data !== undefined) { options.body = JSON.stringify(data); }
    return fetch(url, options).then(function (reply) {
      return reply.json().catch(function () { return {}; }).then(function (answer) {
        if (!reply.ok) { throw new Error(answer.error || String(reply.status)); }
        return answer;
      });
    });
  }
  function rowOf(linkedid) {
    return body.querySelector('tr.call[data-linkedid="' + CSS.escape(linkedid) + '"]');
  }
  function detailsOf(element) { return element.closest("tr.details"); }
  function linkedidOf(details) { return details.previousElementSibling.dataset.linkedid; }

  // After a change: the row and its open details as the server shows them now.
  function refresh(linkedid) {
    if (!rowOf(linkedid)) { return Promise.resolve(); }
    var query = new URLSearchParams(body.dataset.query);
    var rowReply = fetch(base + "calls/" + encodeURIComponent(linkedid) + "/row?" + query,
                         { credentials: "same-origin" }).then(function (r) { return r.json(); });
    var detailsReply = fetch(base + "calls/" + encodeURIComponent(linkedid) + "/details",
                             { credentials: "same-origin" }).then(function (r) { return r.text(); });
    return Promise.all([rowReply, detailsReply]).then(function (replies) {
      var row = rowOf(linkedid);                // now: a live update may have replaced it
      if (!row) { return; }
      var holder = document.createElement("tbody");
      holder.innerHTML = replies[0].html.trim();
      var fresh = holder.querySelector("tr.call"), details = row.nextElementSibling;
      if (fresh) { row.replaceWith(fresh); row = fresh; }
      if (details && details.classList.contains("details")) {
        details.firstChild.innerHTML = replies[1];
        prepare(details);
      }
    });
  }
  function showError(details, error) {
    var box = details.querySelector(".note-error");
    box.textContent = error.message;
    box.classList.remove("hidden");
  }

  // Details just opened (or refreshed): the tag choice sends the whole set at each change.
  function prepare(details) {
    var link = details.querySelector(".call-link input");
    link.value = new URL(link.value, location.href).href;     // a link that works anywhere
    var choice = $(details).find(".call-tag-choice");
    var sending = Promise.resolve();
    choice.dropdown({ clearable: true, fullTextSearch: true, onChange: function (value) {
      // (a multiple <select> gives an array; a plain dropdown a comma-joined string)
      var names = (Array.isArray(value) ? value : String(value || "").split(",")).filter(Boolean);
      var linkedid = linkedidOf(details);
      sending = sending.then(function () {
        return call("PUT", choice.data("url"), { tags: names });
      }).then(function () { return refreshRow(linkedid); })
        .catch(function (error) { showError(details, error); });
    } });
  }
  function refreshRow(linkedid) {
    if (!rowOf(linkedid)) { return Promise.resolve(); }
    var query = new URLSearchParams(body.dataset.query);
    return fetch(base + "calls/" + encodeURIComponent(linkedid) + "/row?" + query,
                 { credentials: "same-origin" }).then(function (r) { return r.json(); })
      .then(function (reply) {
        var row = rowOf(linkedid), holder = document.createElement("tbody");
        holder.innerHTML = reply.html.trim();
        var fresh = holder.querySelector("tr.call");
        if (row && fresh) { row.replaceWith(fresh); }
      });
  }
  new MutationObserver(function (changes) {
    changes.forEach(function (change) {
      change.addedNodes.forEach(function (node) {
        if (node.nodeType === 1 && node.classList.contains("details")) { prepare(node); }
      });
    });
  }).observe(body, { childList: true });

  body.addEventListener("submit", function (event) {
    var add = event.target.closest("form.add-comment");
    if (!add) { return; }
    event.preventDefault();
    var details = detailsOf(add), linkedid = linkedidOf(details);
    call("POST", add.dataset.url, { text: add.elements.text.value })
      .then(function () { return refresh(linkedid); })
      .catch(function (error) { showError(details, error); });
  });

  body.addEventListener("click", function (event) {
    var target = event.target, details = detailsOf(target);
    if (!details) { return; }
    var linkedid = linkedidOf(details), comment = target.closest(".comment");
    if (target.closest(".comment .edit")) {
      var text = comment.querySelector(".text");
      if (comment.querySelector("textarea")) { return; }
      var editor = document.createElement("form");
      editor.className = "ui form edit-comment";
      editor.innerHTML = '<div class="field"><textarea rows="2" maxlength="200"></textarea></div>' +
        '<button type="submit" class="ui mini blue button save"></button>';
      editor.querySelector("textarea").value = text.textContent;
      editor.querySelector(".save").textContent = "✓";
      text.after(editor);
      editor.addEventListener("submit", function (submitted) {
        submitted.preventDefault();
        call("PATCH", comment.dataset.url, { text: editor.querySelector("textarea").value })
          .then(function () { return refresh(linkedid); })
          .catch(function (error) { showError(details, error); });
      });
    } else if (target.closest(".comment .delete")) {
      if (!window.confirm(words.confirmComment)) { return; }
      call("DELETE", comment.dataset.url)
        .then(function () { return refresh(linkedid); })
        .catch(function (error) { showError(details, error); });
    } else if (target.closest(".comment-history")) {
      var list = details.querySelector(".history-list");
      call("GET", target.closest(".comment-history").dataset.url).then(function (answer) {
        list.textContent = "";
        answer.history.forEach(function (change) {
          var line = document.createElement("div");
          line.className = "change";
          var action = actionWords[change.action] || change.action;
          line.textContent = change.at.replace("T", " ").slice(0, 16) + " " + change.actor + " · " +
            action + ": " + (change.old === null ? "" : "«" + change.old + "» → ") +
            (change.new === null ? "—" : "«" + change.new + "»");
          list.append(line);
        });
        if (!answer.history.length) { list.textContent = words.historyEmpty; }
        list.classList.toggle("hidden");
      }).catch(function (error) { showError(details, error); });
    } else if (target.closest(".copy-link")) {
      var button = target.closest(".copy-link"), input = details.querySelector(".call-link input");
      input.select();
      // Refused (no permission, a plain-HTTP address): the older way; failing that too, the
      // link stays selected for Ctrl+C.
      var copied = navigator.clipboard && window.isSecureContext
        ? navigator.clipboard.writeText(input.value) : Promise.reject(new Error("no clipboard"));
      copied.catch(function () {
        if (!document.execCommand("copy")) { throw new Error("not copied"); }
      }).then(function () { button.dataset.tooltip = words.copied; }, function () {});
    } else if (target.closest(".delete-call")) {
      confirmDeletion(words.titleCall, words.whatCall, function (reason) {
        return call("DELETE", target.closest(".delete-call").dataset.url, { reason: reason })
          .then(function () { details.remove(); var row = rowOf(linkedid); if (row) { row.remove(); } });
      });
    } else if (target.closest(".delete-recordings")) {
      confirmDeletion(words.titleRecordings, words.whatRecordings, function (reason) {
        return call("DELETE", target.closest(".delete-recordings").dataset.url, { reason: reason })
          .then(function () { return refresh(linkedid); });
      });
    }
  });

  // Deleting asks for a reason in a dialog; `act(reason)` does it (a promise).
  function confirmDeletion(title, what, act) {
    var box = $(modal);
    box.find(".header").text(title);
    box.find(".what").text(what);
    box.find(".error").addClass("hidden");
    box.find("input[name=reason]").val("");
    box.find(".confirm").off("click").on("click", function () {
      act(box.find("input[name=reason]").val()).then(function () { box.modal("hide"); })
        .catch(function (error) { box.find(".error").text(error.message).removeClass("hidden"); });
    });
    box.find(".cancel").off("click").on("click", function () { box.modal("hide"); });
    box.modal({ closable: true, autofocus: true }).modal("show");
  }

  // An admin deletes the recordings of the whole filter: the count is shown and confirmed.
  var bulk = document.querySelector(".delete-filter-recordings");
  if (bulk) {
    bulk.addEventListener("click", function () {
      call("GET", bulk.dataset.countUrl).then(function (answer) {
        if (!answer.calls) { say(words.none); return; }
        confirmDeletion(words.titleBulk, words.whatBulk.replace("{n}", answer.calls.toLocaleString()),
          function (reason) {
            return call("POST", bulk.dataset.deleteUrl, { reason: reason, expected: answer.calls })
              .then(function (done) {
                say(words.done.replace("{calls}", done.deleted.calls.toLocaleString())
                  .replace("{files}", done.deleted.files.toLocaleString()));
              });
          });
      });
    });
  }

  function say(text) {
    var box = document.querySelector(".action-result");
    box.textContent = text;
    box.classList.remove("hidden");
  }

  // The tag counts of the filter come once the page is shown (counting takes a moment).
  var tagCounts = document.querySelector(".tag-counts[data-url]");
  if (tagCounts) {
    fetch(tagCounts.dataset.url, { credentials: "same-origin" })
      .then(function (reply) { return reply.ok ? reply.json() : { html: "" }; })
      .then(function (answer) {
        tagCounts.innerHTML = answer.html.trim();
        tagCounts.classList.add("loaded");
      });
  }

  // A link to a call opens the page on its details.
  if (body.dataset.open) {
    var opened = rowOf(body.dataset.open);
    if (opened) { opened.click(); }
  }
})();
