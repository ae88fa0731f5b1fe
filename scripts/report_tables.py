"""An evaluation report (JSON from `python -m fer_core evaluate --json`) as Markdown tables.

    python scripts/report_tables.py checkpoints/fer2013_effnet_b0.PrivateTest.json [OTHER.json ...]

Prints the headline (accuracy, macro-F1, ECE), the per-class table (precision, recall, F1, support,
mean confidence when right and when wrong, ECE of the class's answers) and the confusion matrix
(rows: true class, columns: predicted). With several reports, a one-line-a-report comparison first.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def headline(name: str, report: dict) -> str:
    return (f"| {name} | {report.get('split', '')} | {report.get('tta', 'none')} | {report['num_images']:,} | "
            f"{report['accuracy']:.2%} | {report['macro']['f1']:.4f} | {report['ece']:.4f} |")


def per_class_table(report: dict) -> str:
    lines = ["| class | precision | recall | F1 | support | confidence when right | when wrong | ECE |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731  (a class without test images has None)
    for name, c in report["per_class"].items():
        lines.append(f"| {name} | {fmt(c['precision'])} | {fmt(c['recall'])} | {fmt(c['f1'])} | {c['support']} | "
                     f"{fmt(c['mean_confidence_correct'])} | {fmt(c['mean_confidence_wrong'])} | "
                     f"{fmt(c.get('calibration_ece'))} |")
    return "\n".join(lines)


def confusion_table(report: dict) -> str:
    names = report["class_names"]
    lines = ["| true \\ predicted | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for name, row in zip(names, report["confusion_matrix"]):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reports", nargs="+", type=Path)
    args = p.parse_args()
    reports = [(path.name, json.loads(path.read_text())) for path in args.reports]
    print("| report | split | TTA | images | accuracy | macro-F1 | ECE |\n|---|---|---|---:|---:|---:|---:|")
    print("\n".join(headline(name, r) for name, r in reports))
    for name, report in reports:
        print(f"\n### {name}\n\n{per_class_table(report)}\n\nConfusion matrix (rows: true class):\n")
        print(confusion_table(report))


if __name__ == "__main__":
    main()
