package main

import (
	"flag"
	"fmt"
	"os"
)

// renderCmd re-renders a recorded JSON report (`loadgen report FILE`):
// the Markdown on stdout and, when asked, the HTML, CSV or JSON again,
// with the capacity summary and the cost of Noise recomputed for the
// -plan-* flags given. It runs nothing against a server.
func renderCmd(args []string) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	var plan planTarget
	plan.register(fs)
	htmlOut := fs.String("html", "", "write the HTML report here")
	csvOut := fs.String("csv", "", "write the CSV here")
	jsonOut := fs.String("json", "", "write the JSON (schema 3, recomputed summary) here; - prints it alone on stdout (no Markdown)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("report: want one JSON report file, e.g. loadgen report profiles/reference/report.json")
	}
	rep, err := readReport(fs.Arg(0))
	if err != nil {
		return err
	}
	rep.Schema = reportSchema
	rep.NoiseCost = noiseCost(rep.Results)
	rep.Capacity = computeCapacity(rep.Results, rep.Machine, plan)
	if *jsonOut != "-" {
		if err := writeMarkdown(os.Stdout, rep); err != nil {
			return err
		}
	}
	return writeFiles(rep, *jsonOut, *csvOut, *htmlOut)
}
