// The console's only script: the content step's autosave and live preview, small niceties.
// Pages work without it; it talks to this origin only.
"use strict";

(function () {
  const main = document.getElementById("main");
  const csrf = main ? main.dataset.csrf : "";
  const canEdit = main && main.dataset.role && main.dataset.role !== "viewer";

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    });
  }

  function debounce(fn, wait) {
    let timer = null;
    return function () {
      clearTimeout(timer);
      timer = setTimeout(fn, wait);
    };
  }

  // Step 2: only the configurations of the chosen channel.
  const channel = document.getElementById("channel");
  const configuration = document.getElementById("channel_configuration_id");
  if (channel && configuration) {
    const filter = function () {
      for (const option of configuration.options) {
        if (!option.dataset.channel) continue;
        const fits = option.dataset.channel === channel.value;
        option.hidden = !fits;
        option.disabled = !fits;
        if (!fits && option.selected) configuration.value = "";
      }
    };
    channel.addEventListener("change", filter);
    filter();
  }

  // Step 3: the editor and its preview.
  const form = document.getElementById("step-form");
  if (!form || !form.dataset.campaign) return;
  const campaign = form.dataset.campaign;
  const fields = Array.from(form.querySelectorAll("[data-field]"));
  const saveState = document.getElementById("save-state");
  const identity = document.getElementById("preview-identity");
  const profile = document.getElementById("preview-profile");
  const context = document.getElementById("preview-context");
  const errorList = document.getElementById("preview-errors");
  const variables = document.getElementById("preview-variables");
  let sequence = 0;

  const suggested = document.getElementById("preview-identity-options");

  function identityOf(value) {
    value = value.trim();
    if (!value) return null;
    // A suggestion picked: its namespace and id exactly, whatever characters they hold.
    for (const option of suggested ? suggested.options : []) {
      if (option.value === value) return { namespace: option.dataset.namespace, id: option.dataset.id };
    }
    if (value.includes("@")) return { namespace: "email", id: value };
    if (value.startsWith("+")) return { namespace: "phone", id: value };
    const colon = value.indexOf(":");
    if (colon > 0) return { namespace: value.slice(0, colon), id: value.slice(colon + 1) };
    return { namespace: "email", id: value };
  }

  function showErrors(errors) {
    for (const field of fields) {
      const note = document.getElementById("error-" + field.dataset.field);
      note.hidden = true;
      note.textContent = "";
      field.removeAttribute("aria-invalid");
    }
    const contextNote = document.getElementById("error-context");
    contextNote.hidden = true;
    errorList.replaceChildren();
    for (const error of errors) {
      const where = error.line ? "line " + error.line + ", column " + error.column + ": " : "";
      const note = document.getElementById("error-" + error.field);
      if (note) {
        note.textContent = (note.textContent ? note.textContent + " " : "") + where + error.message;
        note.hidden = false;
        const input = form.querySelector('[data-field="' + error.field + '"]');
        if (input) input.setAttribute("aria-invalid", "true");
      } else if (error.field === "context" || error.field === "profile") {
        contextNote.textContent = error.field + ": " + where + error.message;
        contextNote.hidden = false;
      } else {
        const item = document.createElement("li");
        item.textContent = error.field + ": " + where + error.message;
        errorList.append(item);
      }
    }
  }

  function showVariables(found) {
    variables.replaceChildren();
    for (const [kind, paths] of [["profile", found.profile], ["context", found.context]]) {
      for (const path of paths) {
        const item = document.createElement("li");
        const code = document.createElement("code");
        code.textContent = kind + "." + path;
        item.append(code);
        variables.append(item);
      }
    }
    if (!variables.children.length) {
      const item = document.createElement("li");
      item.textContent = "none yet";
      variables.append(item);
    }
  }

  function showContent(answer) {
    const content = answer.content;
    form.dataset.previewState = content ? "rendered" : "failed";
    if (answer.channel === "email") {
      document.getElementById("preview-subject").textContent = content ? content.subject || "" : "";
      document.getElementById("preview-frame").srcdoc = content ? content.html || "" : "";
    } else if (answer.channel === "sms") {
      document.getElementById("preview-sms").textContent = content ? content.body || "" : "";
      document.getElementById("preview-segments").textContent = answer.sms
        ? answer.sms.segments + " segment(s), " + answer.sms.encoding + ", " + answer.sms.units + " units"
        : "";
    } else {
      document.getElementById("preview-push-title").textContent = content ? content.title || "" : "";
      document.getElementById("preview-push-body").textContent = content ? content.body || "" : "";
    }
  }

  async function preview() {
    const mine = ++sequence;
    const response = await post("/campaigns/" + campaign + "/preview", {
      identity: identityOf(identity.value),
      profile: profile.value,
      context: context.value,
    });
    if (mine !== sequence || !response.ok) return;
    const answer = await response.json();
    showContent(answer);
    showErrors(answer.errors);
    showVariables(answer.variables);
    form.dataset.previewed = String(mine);
  }

  async function saveThenPreview() {
    if (canEdit) {
      const content = {};
      for (const field of fields) content[field.name] = field.value;
      saveState.textContent = "Saving…";
      const response = await post("/campaigns/" + campaign + "/content", { content: content });
      saveState.textContent = response.ok ? "Draft saved." : "Not saved (" + response.status + ").";
    }
    await preview();
  }

  // The picker's suggestions: the workspace's profiles whose identity starts with what is typed.
  async function suggest() {
    if (!suggested || !identity.dataset.suggestUrl) return;
    const typed = identity.value.trim();
    const response = await fetch(identity.dataset.suggestUrl + "?q=" + encodeURIComponent(typed), {
      credentials: "same-origin",
      headers: { "Accept": "application/json" },
    });
    if (!response.ok || identity.value.trim() !== typed) return;
    const options = [];
    for (const item of (await response.json()).items) {
      const option = document.createElement("option");
      option.value = item.value;
      option.textContent = item.label;
      option.dataset.namespace = item.namespace;
      option.dataset.id = item.id;
      options.push(option);
    }
    suggested.replaceChildren(...options);
  }

  const onContent = debounce(saveThenPreview, 350);
  const onSample = debounce(preview, 350);
  identity.addEventListener("input", debounce(suggest, 200));
  for (const field of fields) field.addEventListener("input", onContent);
  for (const input of [identity, profile, context]) input.addEventListener("input", onSample);

  for (const button of document.querySelectorAll("[data-width]")) {
    button.addEventListener("click", function () {
      const frame = document.getElementById("preview-frame");
      frame.classList.toggle("mobile", button.dataset.width === "mobile");
      frame.classList.toggle("desktop", button.dataset.width === "desktop");
      for (const other of document.querySelectorAll("[data-width]")) {
        other.setAttribute("aria-pressed", String(other === button));
      }
    });
  }
  preview();
})();
