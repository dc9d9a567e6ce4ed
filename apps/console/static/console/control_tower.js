// The control tower's charts, drawn with the vendored Chart.js from the figures the page carries
// in <script id="control-tower-data">. Points that breach a connection's SLA are drawn red.
"use strict";

(function () {
  const BREACH = "#c62828";
  const PALETTE = ["#1565c0", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f", "#5d4037", "#ad1457", "#455a64"];
  const AGE_COLOURS = ["#a5d6a7", "#fff59d", "#ffb74d", "#e57373"];

  function colour(index) {
    return PALETTE[index % PALETTE.length];
  }

  function pointsFor(dataset, base) {
    const breaches = dataset.breaches || [];
    return {
      pointBackgroundColor: breaches.map((b) => (b ? BREACH : base)),
      pointBorderColor: breaches.map((b) => (b ? BREACH : base)),
      pointRadius: breaches.map((b) => (b ? 5 : 2)),
    };
  }

  function thresholdLine(label, value, count) {
    return {
      label: label,
      data: Array(count).fill(value),
      borderColor: BREACH,
      borderDash: [6, 4],
      borderWidth: 1.5,
      pointRadius: 0,
      fill: false,
      isThreshold: true,
    };
  }

  function options(yTitle, extra) {
    return Object.assign(
      {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        spanGaps: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { title: { display: true, text: "UTC" } },
          y: { beginAtZero: true, title: { display: true, text: yTitle } },
        },
        plugins: { legend: { position: "bottom" } },
      },
      extra || {}
    );
  }

  function perConnection(datasets, thresholdLabel, count) {
    const drawn = datasets.map((d, i) =>
      Object.assign({ label: d.label, data: d.data, borderColor: colour(i), backgroundColor: colour(i), fill: false },
        pointsFor(d, colour(i)))
    );
    if (datasets.length === 1) {
      drawn.push(thresholdLine(thresholdLabel, datasets[0].threshold, count));
    }
    return drawn;
  }

  function draw() {
    const source = document.getElementById("control-tower-data");
    if (!source || typeof Chart === "undefined") {
      return;
    }
    const data = JSON.parse(source.textContent);
    const labels = data.labels;
    const count = labels.length;
    const charts = {};

    charts.success = new Chart(document.getElementById("chart-success"), {
      type: "line",
      data: { labels: labels, datasets: perConnection(data.success, "SLA minimum", count) },
      options: options("% posted", { scales: { x: {}, y: { min: 0, max: 100, title: { display: true, text: "% posted" } } } }),
    });

    const latency = data.latency;
    const latencySets = [
      { label: "p50", data: latency.p50, borderColor: "#90caf9", backgroundColor: "#90caf9" },
      Object.assign({ label: "p95", data: latency.p95, borderColor: "#1565c0", backgroundColor: "#1565c0" },
        pointsFor(latency, "#1565c0")),
      { label: "p99", data: latency.p99, borderColor: "#0d2b52", backgroundColor: "#0d2b52" },
    ];
    if (latency.threshold !== null) {
      latencySets.push(thresholdLine("SLA p95 limit", latency.threshold, count));
    }
    charts.latency = new Chart(document.getElementById("chart-latency"), {
      type: "line",
      data: { labels: labels, datasets: latencySets },
      options: options("seconds"),
    });

    charts.backlog = new Chart(document.getElementById("chart-backlog"), {
      type: "line",
      data: { labels: labels, datasets: perConnection(data.backlog, "SLA maximum", count) },
      options: options("postings"),
    });

    charts.aging = new Chart(document.getElementById("chart-aging"), {
      type: "bar",
      data: {
        labels: labels,
        datasets: data.aging.map((a, i) => ({ label: a.label, data: a.data, backgroundColor: AGE_COLOURS[i] })),
      },
      options: options("open cases", {
        scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, title: { display: true, text: "open cases" } } },
      }),
    });

    charts.reconciliation = new Chart(document.getElementById("chart-reconciliation"), {
      type: "line",
      data: {
        labels: labels,
        datasets: [{ label: "differences to reconcile", data: data.reconciliation, borderColor: "#757575", pointRadius: 0 }],
      },
      options: options("documents", { scales: { x: {}, y: { beginAtZero: true, suggestedMax: 1 } } }),
    });

    window.controlTower = { data: data, charts: charts };
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
