package deploy

import (
	"fmt"
	"strings"
	"testing"
)

// fleetLoadTest is the README's "Load test the fleet" section: its text and
// its commands (the indented lines, shell continuations joined).
func fleetLoadTest(t *testing.T) (text string, cmds []string) {
	t.Helper()
	md := string(readFile(t, "README.md"))
	const heading = "### Load test the fleet\n"
	i := strings.Index(md, heading)
	if i < 0 {
		t.Fatalf("README.md has no %q", strings.TrimSpace(heading))
	}
	text = md[i+len(heading):]
	if j := strings.Index(text, "\n#"); j >= 0 {
		text = text[:j]
	}
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "    ") {
			cmds = append(cmds, strings.TrimSpace(l))
		}
	}
	return text, cmds
}

// command is the first command that contains all of words.
func command(t *testing.T, cmds []string, words ...string) string {
	t.Helper()
	for _, c := range cmds {
		ok := true
		for _, w := range words {
			ok = ok && strings.Contains(c, w)
		}
		if ok {
			return c
		}
	}
	t.Fatalf("the README's fleet load test has no command with %q:\n%s", words, strings.Join(cmds, "\n"))
	return ""
}

// TestFleetLoadTestCommands: the README's fleet load test is exactly the
// Job's pods printing their JSON reports, `kubectl logs` collecting each
// pod's whole log by its completion index, and `loadgen merge` on every
// file collected, with flags `loadgen merge -h` lists.
func TestFleetLoadTestCommands(t *testing.T) {
	f := loadFleet(t)
	job, ns := f.job.Name, f.job.Namespace
	n := int(*f.job.Spec.Completions)
	args, _ := parseArgs(f.job.Spec.Template.Spec.Containers[0].Args)
	if args.values["json"] != "-" {
		t.Errorf("the Job's loadgen has -json=%s: its pods must print the report on stdout (-json=-) for kubectl logs", args.values["json"])
	}
	_, cmds := fleetLoadTest(t)

	command(t, cmds, "kubectl apply -k deploy/kubernetes/loadgen")
	command(t, cmds, "kubectl -n "+ns+" wait", "--for=condition=complete", "job/"+job)

	var idx []string
	for i := range n {
		idx = append(idx, fmt.Sprint(i))
	}
	if loop := command(t, cmds, "for i in"); loop != "for i in "+strings.Join(idx, " ")+"; do" {
		t.Errorf("%q: the Job has %d completions, want the loop over %s", loop, n, strings.Join(idx, " "))
	}
	logs := strings.Fields(command(t, cmds, "kubectl", " logs "))
	la, pos := parseArgs(logs[1:])
	if la.values["n"] != ns {
		t.Errorf("kubectl logs in namespace %q, the Job runs in %q", la.values["n"], ns)
	}
	// With a selector kubectl logs defaults to the last 10 lines.
	if la.values["tail"] != "-1" {
		t.Errorf("kubectl logs -l without --tail=-1 keeps only the last 10 lines of the report")
	}
	sel := map[string]string{}
	for _, kv := range strings.Split(la.values["l"], ",") {
		k, v, _ := strings.Cut(kv, "=")
		sel[k] = v
	}
	if sel["job-name"] != job || sel["batch.kubernetes.io/job-completion-index"] != "$i" || len(sel) != 2 {
		t.Errorf("kubectl logs -l %q: want exactly the Job's pods of completion index $i", la.values["l"])
	}
	if strings.Join(pos, " ") != "logs > gen-$i.json" {
		t.Errorf("kubectl logs %q: want the log in gen-$i.json", pos)
	}

	merge := command(t, cmds, "loadgen merge")
	fields := strings.Fields(merge[strings.Index(merge, "loadgen merge")+len("loadgen merge"):])
	if r := strings.Index(strings.Join(fields, " "), ">"); r >= 0 {
		fields = strings.Fields(strings.Join(fields, " ")[:r])
	}
	ma, files := parseArgs(fields)
	var want []string
	for _, i := range idx {
		want = append(want, "gen-"+i+".json")
	}
	if strings.Join(files, " ") != strings.Join(want, " ") {
		t.Errorf("loadgen merge of %q, want every generator's log: %q", files, want)
	}
	have := helpFlags(t, goBinary(t, "./loadgen"), "merge")
	for _, name := range ma.names {
		if !have[name] {
			t.Errorf("the README's loadgen merge uses -%s, which loadgen merge -h does not list", name)
		}
	}
}
