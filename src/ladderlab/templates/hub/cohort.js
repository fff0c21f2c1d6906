/* The trainers' live cohort view (hub/cohort.html.j2): follow the service's snapshots and render the table
   again from each, with text only (textContent), never markup: learner ids, titles and notes stay text. */
"use strict";

function cellText(s) {
  let text = s.state;
  if (s.score !== null) {
    text += " " + s.score + "/" + s.max_score;
  }
  if (s.passed !== null) {
    text += s.passed ? " passed" : " not passed";
  }
  if (s.practice.run) {
    text += " \u00b7 checks " + s.practice.passed + "/" + s.practice.of;
  }
  return text;
}

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined) {
    node.textContent = text;
  }
  for (const [name, value] of Object.entries(attrs || {})) {
    node.setAttribute(name, value);
  }
  return node;
}

function render(snap) {
  const body = el("tbody");
  for (const learner of snap.learners) {
    const row = el("tr", undefined, {"data-learner": learner.id});
    row.append(el("th", learner.id), el("td", learner.envs.join(", "), {"class": "envs"}));
    for (const lab of snap.labs) {
      const s = learner.labs[lab.id];
      row.append(el("td", cellText(s), {"class": "lab", "data-lab": lab.id, "data-state": s.state}));
    }
    body.append(row);
  }
  document.querySelector("#cohort tbody").replaceWith(body);
  for (const cell of document.querySelectorAll("#cohort tfoot td.rate")) {
    const rate = snap.pass_rates[cell.dataset.lab];
    cell.textContent = rate ? rate.passed + "/" + rate.learners : "";
  }
  const failed = el("ol", undefined, {"id": "most-failed"});
  for (const f of snap.most_failed) {
    failed.append(el("li", f.lab + ": " + f.check + " (" + f.title + "): " + f.learners));
  }
  document.getElementById("most-failed").replaceWith(failed);
}

function follow() {
  const live = document.getElementById("live");
  const source = new EventSource(document.body.dataset.events);
  source.onopen = () => {
    live.dataset.state = "live";
    live.textContent = "live: updates as they happen";
  };
  source.onmessage = (event) => {
    render(JSON.parse(event.data));
    live.dataset.updated = new Date().toISOString();
  };
  source.onerror = () => {
    live.dataset.state = "lost";
    live.textContent = "live updates lost: reconnecting...";
  };
}

document.addEventListener("DOMContentLoaded", follow);
