#!/usr/bin/env python3
"""Median of several benchmark runs: median_runs.py OUT RUN1.json RUN2.json ...

Each run is {engine, threads, ..., results: {workload: {field: number}}}. OUT gets the first run's
top-level fields and, per workload and field, the median over the runs that measured it (for an
even count, the mean of the middle two)."""
import json
import statistics
import sys

out, *paths = sys.argv[1:]
runs = [json.load(open(path)) for path in paths]
merged = {key: value for key, value in runs[0].items() if key != "results"}
merged["runs"] = len(runs)
results = {}
for run in runs:
    for workload, fields in run["results"].items():
        for field, value in fields.items():
            if isinstance(value, (int, float)):
                results.setdefault(workload, {}).setdefault(field, []).append(value)
merged["results"] = {
    workload: {field: statistics.median(values) for field, values in fields.items()}
    for workload, fields in results.items()
}
json.dump(merged, open(out, "w"), indent=1, sort_keys=True)
