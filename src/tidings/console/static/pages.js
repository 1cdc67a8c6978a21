// The workspace pages' script: a live audience count and an import's progress. The pages work
// without it (the count comes on save, the import page refreshes itself); it talks to this
// origin only.
"use strict";

(function () {
  const main = document.getElementById("main");
  const csrf = main ? main.dataset.csrf : "";

  // Audiences: the rule's count (or its errors, with line and column) as it is typed.
  const rule = document.getElementById("audience-rule");
  const estimate = document.getElementById("estimate");
  if (rule && estimate) {
    const note = document.getElementById("error-rule") || document.createElement("p");
    let sequence = 0;
    let timer = null;
    const check = async function () {
      const mine = ++sequence;
      if (!rule.value.trim()) {
        estimate.textContent = "Write a rule to see how many profiles it matches.";
        return;
      }
      estimate.textContent = "Counting…";
      const response = await fetch("/audiences/estimate", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify({ rule: rule.value }),
      });
      if (mine !== sequence) return;
      const answer = await response.json();
      if (response.ok) {
        note.hidden = true;
        note.textContent = "";
        rule.removeAttribute("aria-invalid");
        estimate.dataset.count = String(answer.count);
        estimate.textContent = (answer.exact ? "" : "More than ") + answer.count.toLocaleString() +
          " profile" + (answer.count === 1 ? "" : "s") + " match now.";
      } else {
        const errors = answer.errors || [];
        const text = errors.map(function (e) {
          const said = e.message.indexOf("column") >= 0;
          return (e.line && !said ? "line " + e.line + ", column " + e.column + ": " : "") + e.message;
        }).join("; ") || answer.detail || "The rule is not valid.";
        note.id = "error-rule";
        note.className = "field-error";
        note.textContent = text;
        note.hidden = false;
        if (!note.parentNode) rule.insertAdjacentElement("afterend", note);
        rule.setAttribute("aria-invalid", "true");
        rule.setAttribute("aria-describedby", "error-rule");
        delete estimate.dataset.count;
        estimate.textContent = "No count: fix the rule first.";
      }
    };
    rule.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(check, 400);
    });
  }

  // An import: its progress, polled until it ends, then the page with the full report.
  const job = document.getElementById("import");
  const ongoing = function (state) { return state === "queued" || state === "running"; };
  if (job && ongoing(job.dataset.state)) {
    const show = function (id, value) {
      const element = document.getElementById(id);
      if (element) element.textContent = String(value);
    };
    const poll = async function () {
      const response = await fetch(job.dataset.statusUrl, { credentials: "same-origin", headers: { "Accept": "application/json" } });
      if (!response.ok) return;
      const status = await response.json();
      document.getElementById("import-progress").value = status.percent;
      show("import-percent", status.percent + "%");
      show("import-state", status.state);
      show("import-bytes", status.bytes_read);
      for (const name of ["lines", "created", "updated", "unchanged"]) show("import-" + name, status.report[name]);
      show("import-rejected", status.report.rejected_total);
      if (ongoing(status.state)) setTimeout(poll, 1000);
      else window.location.reload();
    };
    setTimeout(poll, 500);
  }
})();
