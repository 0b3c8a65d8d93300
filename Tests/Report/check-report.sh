#!/usr/bin/env bash
# Renders a training report in headless Chromium and checks what the browser built from it.
# Usage: Tests/Report/check-report.sh [REPORT.html] [SCREENSHOT.png]
#   default report: runs/train/report.html (what `backprop train` writes; `backprop train-text`'s
#   runs/text/report.html is checked for its own charts); needs Debian's chromium.
# Passes when the page parses into the expected charts, each with at least one drawn line, and the
# browser logs no error; the screenshot is for a person to look at.
set -euo pipefail
report=$(realpath "${1:-runs/train/report.html}")
screenshot=${2:-${report%.html}.png}
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "chromium not found: apt-get install chromium" >&2; exit 1; }
flags=(--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars --allow-file-access-from-files)

log=$(mktemp)
dom=$("$browser" "${flags[@]}" --enable-logging=stderr --v=0 --dump-dom "file://$report" 2>"$log")
"$browser" "${flags[@]}" --window-size=800,3200 --screenshot="$screenshot" "file://$report" 2>/dev/null

fail() { echo "check-report: $1" >&2; exit 1; }
count() { grep -o "$1" <<<"$dom" | wc -l; }
charts=$(count '<svg')
lines=$(count '<polyline')
if grep -q 'aria-label="How far back the gradient reaches' <<<"$dom"; then
    titles=("Loss" "Gradient norm per layer" "How far back the gradient reaches")  # train-text's report
else
    titles=("Loss" "Accuracy" "Learning rate" "Gradient norm per layer" "Dead ReLU units")
fi
[ "$charts" -ge "${#titles[@]}" ] || fail "expected at least ${#titles[@]} charts (${titles[*]}), found $charts"
[ "$lines" -ge "$charts" ] || fail "expected a drawn line in every chart: $charts charts, $lines lines"
for title in "${titles[@]}"; do
    grep -q "aria-label=\"$title" <<<"$dom" || fail "no chart titled '$title'"
done
! grep -q 'NaN\|Infinity' <<<"$dom" || fail "the page contains NaN or Infinity"
! grep -qi 'Uncaught\|ERROR:.*console' "$log" || fail "the browser logged an error: $(grep -i 'Uncaught\|ERROR' "$log" | head -3)"
[ -s "$screenshot" ] || fail "no screenshot written"
echo "check-report: $report renders: $charts charts, $lines lines; screenshot $screenshot"
