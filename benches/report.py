#!/usr/bin/python3
"""Renders bench/results/latest.tsv (benches/suite.sh) as a Markdown table and
a PNG plot of the ours-to-baseline ratios, with each goal marked.

usage: report.py RESULTS.tsv OUT.md OUT.png
"""
import csv
import os
import datetime
import platform
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(tsv, md, png):
    with open(tsv, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    lines = [
        f"Measured {datetime.date.today()} on {platform.node()} ({cores} cores, "
        f"{platform.release()}) by `make bench`; times are min / median / p90.",
        "",
    ]
    partial = os.environ.get("SECTIONS_MEASURED", "").split()
    if partial:
        lines += [
            f"Only {', '.join(partial)} measured in this run (`SECTIONS`); "
            "the other rows are from the run before.",
            "",
        ]
    lines += [
        "| Section | Measurement | wasmbox | baseline | ratio | goal | |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        verdict = {"met": "met", "missed": "**missed**"}.get(r["verdict"], r["verdict"])
        lines.append(
            "| {section} | {measurement} | {ours} | {baseline} | {ratio} | {goal} | {v} |".format(
                v=verdict, **r
            )
        )
    with open(md, "w") as f:
        f.write("\n".join(lines) + "\n")

    plotted = [r for r in rows if _number(r["ratio"]) is not None]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(plotted) + 1.5))
    names = [f'{r["section"]}: {r["measurement"]}' for r in plotted]
    values = [_number(r["ratio"]) for r in plotted]
    colors = [
        {"met": "tab:green", "missed": "tab:red"}.get(r["verdict"], "tab:gray")
        for r in plotted
    ]
    ax.barh(names, values, color=colors)
    ax.axvline(1.0, color="black", linewidth=0.8)
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:g}×", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("wasmbox ÷ baseline (log scale; green: goal met, red: missed)")
    ax.set_title("wasmbox against runc / the reference shim")
    fig.tight_layout()
    # "tight": the long measurement names must not push the title and the
    # axis label off the picture.
    fig.savefig(png, dpi=110, bbox_inches="tight")


def _number(text):
    try:
        return float(text)
    except ValueError:
        return None


if __name__ == "__main__":
    main(*sys.argv[1:4])
