# Splices the percentiles and histograms of a recording ($rec, a schema-3
# report) into the fixture (testdata/README.md):
#   jq --indent 2 --slurpfile rec REC.json -f splice-histograms.jq report.json
def pct: test("_p[0-9]{2,}_(ms|us)$");
def sorted: to_entries | sort_by(.key) | from_entries;
.schema = 3
| .results |= map(
    . as $r
    | ([$rec[0].results[] | select(.stack == $r.stack and .scenario == $r.scenario and .histograms != null)] | first) as $n
    | if $n == null then $r else
        $r
        | .metrics = ((.metrics | with_entries(select(.key | pct | not))) + ($n.metrics | with_entries(select(.key | pct))) | sorted)
        | .spread = ((.spread | with_entries(select(.key | pct | not))) + ($n.spread | with_entries(select(.key | pct))) | sorted)
        | .histograms = ($n.histograms | sorted)
      end)
