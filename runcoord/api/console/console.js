// The run page follows its run: the console's event stream says when the run's story
// changed, and the live section is fetched again and swapped in place (no page reload),
// keeping open the entries a person opened.
"use strict";
window.consoleLoadedAt = window.consoleLoadedAt || Date.now();

function refresh(section) {
  const open = new Set(
    Array.from(section.querySelectorAll("details[open]")).map((d) => d.id)
  );
  return fetch(section.dataset.fragment, { credentials: "same-origin" })
    .then((answer) => (answer.ok ? answer.text() : Promise.reject(answer.status)))
    .then((text) => {
      section.innerHTML = text;
      open.forEach((id) => {
        const d = document.getElementById(id);
        if (d) d.open = true;
      });
    });
}

function follow() {
  const section = document.getElementById("live");
  if (!section || !section.dataset.live) return;
  const source = new EventSource(section.dataset.live);
  source.addEventListener("changed", () => refresh(section).catch(() => {}));
  source.addEventListener("finished", () => {
    source.close();
    refresh(section).catch(() => {});
  });
}

document.addEventListener("DOMContentLoaded", follow);
