// The trend of a reconciliation scope: each completed run's differences, stacked by class, drawn
// with the vendored Chart.js from the figures the page carries in <script id="reconciliation-trend">.
"use strict";

(function () {
  const COLOURS = {
    missing_in_ledger: "#6a1b9a",
    missing_in_erp: "#c62828",
    duplicate_in_erp: "#ef6c00",
    currency_mismatch: "#00838f",
    amount_mismatch: "#1565c0",
    status_mismatch: "#2e7d32",
  };

  function draw() {
    const data = JSON.parse(document.getElementById("reconciliation-trend").textContent);
    const canvas = document.getElementById("trend-chart");
    if (!canvas || typeof Chart === "undefined") {
      return;
    }
    canvas.chart = new Chart(canvas, {
      type: "bar",
      data: {
        labels: data.labels,
        datasets: data.datasets.map((d) => ({
          label: d.label,
          data: d.data,
          backgroundColor: COLOURS[d.kind] || "#455a64",
          stack: "differences",
        })),
      },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { stacked: true, title: { display: true, text: "Run finished (UTC)" } },
          y: { stacked: true, beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: "Differences" } },
        },
        plugins: { legend: { position: "bottom" } },
        onClick: (event, elements) => {
          if (elements.length) {
            window.location.href = data.urls[elements[0].index];
          }
        },
      },
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
