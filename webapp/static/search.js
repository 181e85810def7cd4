// Search page: live tag counts and precision notes while the agreement range moves, and tidy shareable URLs.
// Without JavaScript the form still works (GET with repeated tags=...).
(function () {
  "use strict";
  var form = document.getElementById("search-form");
  if (!form) return;
  var minInput = document.getElementById("min-agreement");
  var maxInput = document.getElementById("max-agreement");
  var minOut = document.getElementById("min-out");
  var maxOut = document.getElementById("max-out");
  var note = document.getElementById("precision-note");
  var tagNote = document.getElementById("tag-precision");
  var preview = document.getElementById("preview");
  var card = JSON.parse(document.getElementById("card-rows").textContent || "{}");
  var pending = null;
  var submitting = null;
  var latest = 0;

  function pct(value, digits) { return (value * 100).toFixed(digits || 0) + "%"; }

  function chosenTags() {
    return Array.prototype.filter.call(form.querySelectorAll("input[name=tags]"), function (box) {
      return box.checked;
    }).map(function (box) { return box.value; });
  }

  // The search as URL parameters, leaving out defaults so shared links stay short.
  function params(extra) {
    var query = new URLSearchParams();
    var tags = chosenTags();
    if (tags.length) query.set("tags", tags.join(","));
    if (parseFloat(minInput.value) > 0) query.set("min_agreement", minInput.value);
    if (parseFloat(maxInput.value) < 1) query.set("max_agreement", maxInput.value);
    var sort = form.elements.sort.value;
    if (sort !== "agreement_desc") query.set("sort", sort);
    query.set("rows", form.elements.rows.value);
    if (form.elements.model) query.set("model", form.elements.model.value);
    var prefix = form.elements.source_prefix ? form.elements.source_prefix.value.trim() : "";
    if (prefix) query.set("source_prefix", prefix);
    Object.keys(extra || {}).forEach(function (key) { query.set(key, extra[key]); });
    return query;
  }

  function submit() {
    document.body.classList.add("loading");
    window.location.assign(form.getAttribute("action") + "?" + params().toString());
  }

  // Keyboard steps fire a change per key press: wait for a pause before loading the new search.
  function submitSoon() {
    clearTimeout(submitting);
    submitting = setTimeout(submit, 450);
  }

  // The contract's rule (jobs/core/contract.py min_votes_for): fewest votes reaching the threshold.
  function neededVotes() {
    return Math.max(1, Math.ceil(parseFloat(minInput.value) * card.trees - 1e-9));
  }

  function showPrecision() {
    if (!card.trees || !card.rows || !card.rows.length) return;
    var needed = neededVotes();
    var row = card.rows.filter(function (r) { return r.min_votes === needed; })[0];
    if (!row || row.precision === null) {
      note.textContent = "The model card has no precision for this threshold.";
      return;
    }
    note.innerHTML = "";
    note.append("Model card: with at least ");
    var strong = document.createElement("strong");
    strong.textContent = needed + " of " + card.trees;
    note.append(strong, " trees agreeing, tags are right ");
    var right = document.createElement("strong");
    right.textContent = pct(row.precision, 1);
    note.append(right, " of the time (on " + pct(row.coverage, 1) + " of test images).");
  }

  // Per tag: "cat at ≥ 60%: right 71% (123 test images)", as the page renders it, for the new threshold.
  function showTagPrecision() {
    if (!tagNote || !card.trees || !card.per_class) return;
    var needed = neededVotes();
    var threshold = pct(needed / card.trees);
    tagNote.textContent = "";
    (card.tags || []).forEach(function (tag) {
      var row = (card.per_class[tag] || []).filter(function (r) { return r.min_votes === needed; })[0];
      if (!row) return;
      var item = document.createElement("li");
      item.dataset.tag = tag;
      var swatch = document.createElement("span");
      swatch.className = "swatch tag-" + tag;
      swatch.setAttribute("aria-hidden", "true");
      var text = document.createElement("span");
      text.className = "tag-precision-text";
      text.append(tag + " at \u2265 " + threshold + ": ");
      if (row.precision === null) {
        text.append("no test images");
      } else {
        var right = document.createElement("strong");
        right.textContent = pct(row.precision);
        var images = row.images.toLocaleString("en") + " test image" + (row.images === 1 ? "" : "s");
        text.append("right ", right, " (" + images + ")");
      }
      item.append(swatch, text);
      tagNote.append(item);
    });
    tagNote.hidden = !tagNote.children.length;
  }

  // Counts for the current range without reloading: rows=0 asks only for numFound and facets.
  function refreshCounts() {
    var ticket = ++latest;
    fetch(form.dataset.api + "?" + params({ rows: "0" }).toString(), { headers: { Accept: "application/json" } })
      .then(function (response) { return response.json(); })
      .then(function (answer) {
        if (ticket !== latest || !answer.facets) return;
        var counts = answer.facets.tag;
        var top = Math.max.apply(null, Object.values(counts).concat([1]));
        Object.keys(counts).forEach(function (tag) {
          var count = form.querySelector(".count[data-tag='" + tag + "']");
          var bar = form.querySelector(".count-bar span[data-tag='" + tag + "']");
          if (count) count.textContent = counts[tag].toLocaleString("en");
          if (bar) bar.style.width = (100 * counts[tag] / top) + "%";
        });
        if (preview) preview.textContent = answer.numFound.toLocaleString("en") + " match the new range";
      })
      .catch(function () { /* the page still works; counts update on the next load */ });
  }

  function onRangeInput(event) {
    var low = parseFloat(minInput.value);
    var high = parseFloat(maxInput.value);
    // The thumbs never cross: moving one past the other pushes it along.
    if (low > high) {
      if (event.target === minInput) maxInput.value = minInput.value; else minInput.value = maxInput.value;
    }
    var track = document.getElementById("dual-range");
    track.style.setProperty("--lo", minInput.value);
    track.style.setProperty("--hi", maxInput.value);
    minOut.textContent = pct(parseFloat(minInput.value));
    maxOut.textContent = pct(parseFloat(maxInput.value));
    showPrecision();
    showTagPrecision();
    clearTimeout(submitting);
    clearTimeout(pending);
    pending = setTimeout(refreshCounts, 120);
  }

  [minInput, maxInput].forEach(function (input) {
    input.addEventListener("input", onRangeInput);
    input.addEventListener("change", submitSoon);
  });
  form.querySelectorAll("input[name=tags]").forEach(function (box) {
    box.addEventListener("change", function () {
      box.closest("label").classList.toggle("checked", box.checked);
      submit();
    });
  });
  form.elements.sort.addEventListener("change", submit);
  form.elements.rows.addEventListener("change", submit);
  form.addEventListener("submit", function (event) { event.preventDefault(); submit(); });

  // Cursors only go forward, so "Previous" walks back through this tab's history; it is shown
  // only when the page before was one of ours (not on a page opened from a shared link).
  var prev = document.getElementById("prev-page");
  if (prev && document.referrer && new URL(document.referrer).origin === window.location.origin) {
    prev.hidden = false;
    prev.addEventListener("click", function (event) { event.preventDefault(); history.back(); });
  }
})();
