package deploy

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

const (
	kubeDir    = "kubernetes"
	loadgenDir = "kubernetes/loadgen"
	namespace  = "swarmgate"
	// The container that runs the server, in the StatefulSet's pod.
	serverContainer = "swarmgate"
	// podNameLabel is set by the StatefulSet controller on each pod.
	podNameLabel = "statefulset.kubernetes.io/pod-name"
)

// Measured per-connection figures the pod's sizing must hold to
// (docs/capacity.md; re-measured after each engine change):
const (
	// Server RSS per idle libp2p connection over /ws (the pod's listener):
	// 5.9-6.3 KB at 5,000-15,000 connections (bench/RESULTS.md "Side by
	// side" §1, 2026-12-04).
	rssPerConn = 6_300
	// Kernel slab per idle TCP socket, charged to the pod's memory cgroup:
	// 3.9-4.0 KB (docs/capacity.md, measured with deploy/sockmem).
	kernelPerConn = 4_000
	// One 4 KiB page of socket buffer while data is queued, on a quarter of
	// the connections at once.
	queuedPerConn = 4096 / 4
	// File descriptors beyond one per connection: listeners, metrics,
	// the runtime's epoll and pipes, with room.
	fdHeadroom = 4096
	// The kubelet's SIGTERM comes after preStop; the process needs a moment
	// after -drain-timeout to flush and exit before SIGKILL.
	exitMargin = 10
)

// kustomization is the part of a kustomize.config.k8s.io/v1beta1
// Kustomization these files use (kustomize's own module is too heavy for
// this test); strict decoding still rejects any other field.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
}

// kinds maps apiVersion/kind to the type a document decodes into.
var kinds = map[string]func() any{
	"v1/Namespace":                                  func() any { return new(corev1.Namespace) },
	"v1/ConfigMap":                                  func() any { return new(corev1.ConfigMap) },
	"v1/Service":                                    func() any { return new(corev1.Service) },
	"apps/v1/StatefulSet":                           func() any { return new(appsv1.StatefulSet) },
	"policy/v1/PodDisruptionBudget":                 func() any { return new(policyv1.PodDisruptionBudget) },
	"networking.k8s.io/v1/NetworkPolicy":            func() any { return new(networkingv1.NetworkPolicy) },
	"monitoring.coreos.com/v1/ServiceMonitor":       func() any { return new(monitoringv1.ServiceMonitor) },
	"batch/v1/Job":                                  func() any { return new(batchv1.Job) },
	"kustomize.config.k8s.io/v1beta1/Kustomization": func() any { return new(kustomization) },
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decodeStrict decodes every YAML document in data into the type its
// apiVersion and kind name. Strict: an unknown or misspelt field, a
// duplicate key or an unknown kind is an error, as the API server would
// reject or silently drop it.
func decodeStrict(data []byte) ([]any, error) {
	var out []any
	for i, d := range docSeparator.Split(string(data), -1) {
		if isBlankYAML(d) {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(d), &tm); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		mk, ok := kinds[tm.APIVersion+"/"+tm.Kind]
		if !ok {
			return nil, fmt.Errorf("document %d: unexpected kind %s/%s", i, tm.APIVersion, tm.Kind)
		}
		obj := mk()
		if err := yaml.UnmarshalStrict([]byte(d), obj); err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", i, tm.Kind, err)
		}
		out = append(out, obj)
	}
	return out, nil
}

func isBlankYAML(d string) bool {
	for _, line := range strings.Split(d, "\n") {
		if s := strings.TrimSpace(line); s != "" && !strings.HasPrefix(s, "#") {
			return false
		}
	}
	return true
}

// fleet is every object in deploy/kubernetes and its loadgen directory.
type fleet struct {
	namespace *corev1.Namespace
	config    *corev1.ConfigMap
	sts       *appsv1.StatefulSet
	services  []*corev1.Service
	pdb       *policyv1.PodDisruptionBudget
	netpol    *networkingv1.NetworkPolicy
	monitor   *monitoringv1.ServiceMonitor
	job       *batchv1.Job
	kust      map[string]*kustomization // by directory
	files     map[string][]any          // by path
}

func loadFleet(t *testing.T) *fleet {
	t.Helper()
	f := &fleet{kust: map[string]*kustomization{}, files: map[string][]any{}}
	for _, dir := range []string{kubeDir, loadgenDir} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.IsDir() || !strings.HasSuffix(e.Name(), ".yaml") {
				continue
			}
			p := path.Join(dir, e.Name())
			objs, err := decodeStrict(readFile(t, p))
			if err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			f.files[p] = objs
			for _, o := range objs {
				dup := false
				switch o := o.(type) {
				case *corev1.Namespace:
					dup, f.namespace = f.namespace != nil, o
				case *corev1.ConfigMap:
					dup, f.config = f.config != nil, o
				case *appsv1.StatefulSet:
					dup, f.sts = f.sts != nil, o
				case *corev1.Service:
					f.services = append(f.services, o)
				case *policyv1.PodDisruptionBudget:
					dup, f.pdb = f.pdb != nil, o
				case *networkingv1.NetworkPolicy:
					dup, f.netpol = f.netpol != nil, o
				case *monitoringv1.ServiceMonitor:
					dup, f.monitor = f.monitor != nil, o
				case *batchv1.Job:
					dup, f.job = f.job != nil, o
				case *kustomization:
					dup, f.kust[dir] = f.kust[dir] != nil, o
				}
				if dup {
					t.Fatalf("%s: a second %T; the test expects one", p, o)
				}
			}
		}
	}
	for name, v := range map[string]bool{
		"Namespace": f.namespace == nil, "ConfigMap": f.config == nil, "StatefulSet": f.sts == nil,
		"PodDisruptionBudget": f.pdb == nil, "NetworkPolicy": f.netpol == nil,
		"ServiceMonitor": f.monitor == nil, "Job": f.job == nil,
		"Kustomization (fleet)": f.kust[kubeDir] == nil, "Kustomization (loadgen)": f.kust[loadgenDir] == nil,
	} {
		if v {
			t.Fatalf("no %s in %s", name, kubeDir)
		}
	}
	return f
}

// container is the StatefulSet's server container.
func (f *fleet) container(t *testing.T) *corev1.Container {
	t.Helper()
	for i := range f.sts.Spec.Template.Spec.Containers {
		if c := &f.sts.Spec.Template.Spec.Containers[i]; c.Name == serverContainer {
			return c
		}
	}
	t.Fatalf("StatefulSet %s: no container %q", f.sts.Name, serverContainer)
	return nil
}

// args are the server container's flags with $(VAR) left unexpanded.
func (f *fleet) args(t *testing.T) cmdFlags {
	c := f.container(t)
	a, pos := parseArgs(append(slices.Clone(c.Command[min(len(c.Command), 1):]), c.Args...))
	if len(pos) > 0 {
		t.Fatalf("server container: positional arguments %q (a subcommand?)", pos)
	}
	return a
}

// serverConfig is the -config file the container reads: the ConfigMap key
// mounted at the -config path.
func (f *fleet) serverConfig(t *testing.T) serverConfig {
	t.Helper()
	c := f.container(t)
	p := f.args(t).values["config"]
	if p == "" {
		return serverConfig{}
	}
	vol := mountedVolume(t, f.sts, c, p)
	if vol.ConfigMap == nil || vol.ConfigMap.Name != f.config.Name {
		t.Fatalf("-config %s is not from ConfigMap %s", p, f.config.Name)
	}
	data, ok := f.config.Data[path.Base(p)]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %s (-config %s)", f.config.Name, path.Base(p), p)
	}
	return decodeConfig(t, "ConfigMap "+f.config.Name, []byte(data))
}

// mountedVolume is the volume whose mount holds file (the longest mount
// path that is a parent of it).
func mountedVolume(t *testing.T, sts *appsv1.StatefulSet, c *corev1.Container, file string) *corev1.Volume {
	t.Helper()
	m := mountOf(c, file)
	if m == nil {
		t.Fatalf("%s is not on a mounted volume", file)
	}
	for i := range sts.Spec.Template.Spec.Volumes {
		if v := &sts.Spec.Template.Spec.Volumes[i]; v.Name == m.Name {
			return v
		}
	}
	t.Fatalf("volume %q is mounted but not declared", m.Name)
	return nil
}

func mountOf(c *corev1.Container, file string) *corev1.VolumeMount {
	var best *corev1.VolumeMount
	for i := range c.VolumeMounts {
		m := &c.VolumeMounts[i]
		if strings.HasPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/") && (best == nil || len(m.MountPath) > len(best.MountPath)) {
			best = m
		}
	}
	return best
}

// pod is what the StatefulSet controller makes for one ordinal.
type pod struct {
	name   string
	labels labels.Set
}

func (f *fleet) pods() []pod {
	start := int32(0)
	if o := f.sts.Spec.Ordinals; o != nil {
		start = o.Start
	}
	n := int32(1)
	if f.sts.Spec.Replicas != nil {
		n = *f.sts.Spec.Replicas
	}
	var ps []pod
	for i := start; i < start+n; i++ {
		name := fmt.Sprintf("%s-%d", f.sts.Name, i)
		l := labels.Set{podNameLabel: name, "apps.kubernetes.io/pod-index": strconv.Itoa(int(i)), "controller-revision-hash": "x"}
		for k, v := range f.sts.Spec.Template.Labels {
			l[k] = v
		}
		ps = append(ps, pod{name, l})
	}
	return ps
}

func (f *fleet) jobPodLabels() labels.Set {
	l := labels.Set{"batch.kubernetes.io/job-name": f.job.Name, "job-name": f.job.Name, "batch.kubernetes.io/job-completion-index": "0"}
	for k, v := range f.job.Spec.Template.Labels {
		l[k] = v
	}
	return l
}

func selector(t *testing.T, s *metav1.LabelSelector) labels.Selector {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		t.Fatal(err)
	}
	if sel.Empty() {
		t.Fatal("an empty selector selects everything")
	}
	return sel
}

// containerPort resolves a Service or probe port (number or name) to the
// container's port number.
func containerPort(t *testing.T, c *corev1.Container, p intstr.IntOrString) int32 {
	t.Helper()
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	t.Fatalf("container %s has no port named %q", c.Name, p.StrVal)
	return 0
}

// TestManifestsDecodeStrictly: every document in deploy/kubernetes decodes
// into its k8s.io/api (or prometheus-operator) type with no unknown field,
// every namespaced object is in the fleet's namespace, and each
// kustomization lists exactly the files beside it.
func TestManifestsDecodeStrictly(t *testing.T) {
	f := loadFleet(t)
	if f.namespace.Name != namespace {
		t.Errorf("Namespace %q, want %q", f.namespace.Name, namespace)
	}
	if got := f.namespace.Labels["pod-security.kubernetes.io/enforce"]; got != "restricted" {
		t.Errorf("Namespace: Pod Security enforce = %q, want restricted", got)
	}
	for p, objs := range f.files {
		for _, o := range objs {
			m, ok := o.(metav1.Object)
			if !ok {
				continue // kustomization
			}
			if _, isNS := o.(*corev1.Namespace); !isNS && m.GetNamespace() != namespace {
				t.Errorf("%s: %T %s in namespace %q, want %q", p, o, m.GetName(), m.GetNamespace(), namespace)
			}
		}
	}
	for dir, k := range f.kust {
		var want []string
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if !e.IsDir() && strings.HasSuffix(e.Name(), ".yaml") && e.Name() != "kustomization.yaml" {
				want = append(want, e.Name())
			}
		}
		got := slices.Sorted(slices.Values(k.Resources))
		if !slices.Equal(got, want) {
			t.Errorf("%s/kustomization.yaml: resources %v, files %v", dir, got, want)
		}
	}
	// Every container image is one the kustomization sets.
	images := map[string]bool{}
	for _, k := range f.kust {
		for _, im := range k.Images {
			images[im.Name] = true
		}
	}
	for _, c := range append(slices.Clone(f.sts.Spec.Template.Spec.Containers), f.job.Spec.Template.Spec.Containers...) {
		if !images[c.Image] {
			t.Errorf("container %s: image %q is not set by a kustomization's images", c.Name, c.Image)
		}
	}
}

// TestStrictDecodingRejects: the decoder used above is strict (a typo in a
// field name, a duplicate key and an unknown kind all fail), so the other
// tests cannot pass on a manifest the API server would read differently.
func TestStrictDecodingRejects(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field": "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  externalTraficPolicy: Local\n",
		"duplicate key": "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  type: ClusterIP\n  type: LoadBalancer\n",
		"unknown kind":  "apiVersion: v1\nkind: Servise\nmetadata: {name: x}\n",
		"nested typo":   "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      terminationGracePeriod: 90\n",
	} {
		if _, err := decodeStrict([]byte(doc)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	if objs, err := decodeStrict([]byte("# only a comment\n---\napiVersion: v1\nkind: Service\nmetadata: {name: x}\n")); err != nil || len(objs) != 1 {
		t.Errorf("comment document + Service: %d objects, %v", len(objs), err)
	}
}

// TestIdentityPerPod: every pod reads its own key, named after the pod, from
// a read-only Secret volume with no remapping, so no two pods can share an
// identity and a missing key fails the pod instead of creating a new one.
func TestIdentityPerPod(t *testing.T) {
	f := loadFleet(t)
	c := f.container(t)
	key := f.args(t).values["key"]
	if !strings.Contains(key, "$(POD_NAME)") {
		t.Fatalf("-key %q does not depend on $(POD_NAME): every pod would read the same key", key)
	}
	var podName *corev1.EnvVar
	for i := range c.Env {
		if c.Env[i].Name == "POD_NAME" {
			podName = &c.Env[i]
		}
	}
	if podName == nil || podName.ValueFrom == nil || podName.ValueFrom.FieldRef == nil || podName.ValueFrom.FieldRef.FieldPath != "metadata.name" {
		t.Fatalf("POD_NAME must come from fieldRef metadata.name (unique per pod): %+v", podName)
	}
	m := mountOf(c, key)
	if m == nil || !m.ReadOnly {
		t.Fatalf("-key %s: its volume must be mounted read-only (a missing key must fail, not be created): %+v", key, m)
	}
	if m.SubPath != "" || m.SubPathExpr != "" {
		t.Errorf("key mount uses a subPath: Secret updates would not reach it")
	}
	vol := mountedVolume(t, f.sts, c, key)
	if vol.Secret == nil {
		t.Fatalf("-key %s is on volume %q, not a Secret", key, vol.Name)
	}
	if len(vol.Secret.Items) > 0 {
		t.Errorf("Secret volume remaps keys (items): two pods could be given the same file")
	}
	if o := vol.Secret.Optional; o != nil && *o {
		t.Errorf("Secret volume is optional: a pod could start without its key")
	}
	if vol.Secret.DefaultMode == nil || *vol.Secret.DefaultMode&0o007 != 0 {
		t.Errorf("key files readable by others: defaultMode %v", vol.Secret.DefaultMode)
	}
	if fs := f.sts.Spec.Template.Spec.SecurityContext.FSGroup; vol.Secret.DefaultMode != nil && *vol.Secret.DefaultMode&0o040 != 0 && fs == nil {
		t.Errorf("key files are group-readable but no fsGroup makes the server's group own them")
	}
	seen := map[string]string{}
	for _, p := range f.pods() {
		k := strings.ReplaceAll(key, "$(POD_NAME)", p.name)
		if other, dup := seen[k]; dup {
			t.Errorf("pods %s and %s both read %s", other, p.name, k)
		}
		seen[k] = p.name
		if want := p.name + ".key"; path.Base(k) != want {
			t.Errorf("pod %s reads %s; the README's keygen loop writes %s", p.name, k, want)
		}
	}
	if len(seen) < 2 {
		t.Errorf("%d replica(s): a fleet needs at least two nodes", len(seen))
	}
}

// TestDrainDeadline: preStop, then the drain (-drain-timeout), then the
// exit all fit in terminationGracePeriodSeconds, so the kubelet's SIGKILL
// never cuts a drain short.
func TestDrainDeadline(t *testing.T) {
	f := loadFleet(t)
	c := f.container(t)
	drain := drainTimeout(t, f.args(t), f.serverConfig(t))
	grace := f.sts.Spec.Template.Spec.TerminationGracePeriodSeconds
	if grace == nil {
		t.Fatal("terminationGracePeriodSeconds unset (30 s default): set it from the drain")
	}
	var preStop int64
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		h := c.Lifecycle.PreStop
		if h.Sleep == nil {
			t.Fatalf("preStop is not a sleep action: its duration cannot be checked (and distroless has no shell)")
		}
		preStop = h.Sleep.Seconds
	}
	need := preStop + int64(drain.Seconds()) + exitMargin
	if *grace < need {
		t.Errorf("terminationGracePeriodSeconds %d < preStop %d s + drain %v + exit %d s = %d s", *grace, preStop, drain, exitMargin, need)
	}
	if int64(drain.Seconds()) >= *grace {
		t.Errorf("drain %v not shorter than terminationGracePeriodSeconds %d", drain, *grace)
	}
	t.Logf("preStop %d s + drain %v + %d s exit <= grace %d s", preStop, drain, exitMargin, *grace)
}

// TestPodSecurity: non-root, no privilege escalation, every capability
// dropped, read-only root file system and the runtime's seccomp profile,
// for the server and the load generators, with the image's numeric user.
func TestPodSecurity(t *testing.T) {
	f := loadFleet(t)
	uid := dockerfileUID(t)
	for _, spec := range []struct {
		what string
		pod  *corev1.PodSpec
	}{{"StatefulSet " + f.sts.Name, &f.sts.Spec.Template.Spec}, {"Job " + f.job.Name, &f.job.Spec.Template.Spec}} {
		ps := spec.pod.SecurityContext
		if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot {
			t.Errorf("%s: pod runAsNonRoot not true", spec.what)
		}
		if ps == nil || ps.RunAsUser == nil || *ps.RunAsUser == 0 || *ps.RunAsUser != uid {
			t.Errorf("%s: pod runAsUser must be the image's USER %d", spec.what, uid)
		}
		if ps == nil || ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: seccompProfile RuntimeDefault not set", spec.what)
		}
		if spec.pod.AutomountServiceAccountToken == nil || *spec.pod.AutomountServiceAccountToken {
			t.Errorf("%s: the pod never talks to the API server; automountServiceAccountToken must be false", spec.what)
		}
		if spec.pod.HostNetwork || spec.pod.HostPID || spec.pod.HostIPC {
			t.Errorf("%s: shares a host namespace", spec.what)
		}
		for _, c := range spec.pod.Containers {
			sc := c.SecurityContext
			switch {
			case sc == nil:
				t.Errorf("%s/%s: no securityContext", spec.what, c.Name)
				continue
			case sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot:
				t.Errorf("%s/%s: runAsNonRoot false", spec.what, c.Name)
			case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
				t.Errorf("%s/%s: allowPrivilegeEscalation not false", spec.what, c.Name)
			case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
				t.Errorf("%s/%s: readOnlyRootFilesystem not true", spec.what, c.Name)
			case sc.Privileged != nil && *sc.Privileged:
				t.Errorf("%s/%s: privileged", spec.what, c.Name)
			case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0:
				t.Errorf("%s/%s: capabilities must drop ALL and add none: %+v", spec.what, c.Name, sc.Capabilities)
			}
		}
	}
}

// TestProbesOnMetricsPort: readiness (and liveness) ask the server's
// metrics endpoint, on the port -metrics listens on, on an address the
// kubelet can reach.
func TestProbesOnMetricsPort(t *testing.T) {
	f := loadFleet(t)
	c := f.container(t)
	metrics := f.args(t).values["metrics"]
	if metrics == "" {
		metrics, _ = f.serverConfig(t)["metrics"].(string)
	}
	if metrics == "" {
		t.Fatal("no -metrics: no readiness endpoint")
	}
	if strings.HasPrefix(metrics, "127.") || strings.HasPrefix(metrics, "localhost:") || strings.HasPrefix(metrics, "[::1]") {
		t.Fatalf("-metrics %s listens on loopback: the kubelet and Prometheus cannot reach it", metrics)
	}
	port := hostPortPort(t, metrics)
	if c.ReadinessProbe == nil {
		t.Fatal("no readinessProbe")
	}
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if p == nil {
			continue
		}
		if p.HTTPGet == nil {
			t.Errorf("%s probe is not an HTTP GET of the metrics endpoint", name)
			continue
		}
		if got := containerPort(t, c, p.HTTPGet.Port); got != port {
			t.Errorf("%s probe on port %d, -metrics on %d", name, got, port)
		}
		if p.HTTPGet.Path != "/metrics" && p.HTTPGet.Path != "/healthz" {
			t.Errorf("%s probe path %q, want /metrics (or a /healthz beside it)", name, p.HTTPGet.Path)
		}
	}
	if l, r := c.LivenessProbe, c.ReadinessProbe; l != nil && l.PeriodSeconds*l.FailureThreshold < 2*r.PeriodSeconds*r.FailureThreshold {
		t.Errorf("liveness gives up after %d s, readiness after %d s: a restart ends every connection, so liveness must be the slower", l.PeriodSeconds*l.FailureThreshold, r.PeriodSeconds*r.FailureThreshold)
	}
}

// TestPDBSelectsTheFleet: the PodDisruptionBudget selects exactly the
// StatefulSet's pods (not the load generators) and still allows one
// voluntary disruption, so node drains can proceed one node at a time.
func TestPDBSelectsTheFleet(t *testing.T) {
	f := loadFleet(t)
	sel := selector(t, f.pdb.Spec.Selector)
	for _, p := range f.pods() {
		if !sel.Matches(p.labels) {
			t.Errorf("PDB does not select pod %s", p.name)
		}
	}
	if sel.Matches(f.jobPodLabels()) {
		t.Errorf("PDB selects the load generator pods")
	}
	if sts := selector(t, f.sts.Spec.Selector); sts.String() != sel.String() {
		t.Errorf("PDB selector %q differs from the StatefulSet's %q", sel, sts)
	}
	replicas := len(f.pods())
	switch {
	case f.pdb.Spec.MaxUnavailable != nil:
		if v, err := intstr.GetScaledValueFromIntOrPercent(f.pdb.Spec.MaxUnavailable, replicas, false); err != nil || v < 1 {
			t.Errorf("maxUnavailable %v allows no disruption", f.pdb.Spec.MaxUnavailable)
		}
	case f.pdb.Spec.MinAvailable != nil:
		if v, err := intstr.GetScaledValueFromIntOrPercent(f.pdb.Spec.MinAvailable, replicas, true); err != nil || v >= replicas {
			t.Errorf("minAvailable %v allows no disruption of %d pods", f.pdb.Spec.MinAvailable, replicas)
		}
	default:
		t.Error("PDB sets neither maxUnavailable nor minAvailable")
	}
}

// TestServices: the headless Service governs the StatefulSet and selects
// every pod; each per-pod Service selects exactly one pod, every ordinal
// has exactly one, keeps the peer's source address and exposes only the
// p2p port; no Service selects the load generators.
func TestServices(t *testing.T) {
	f := loadFleet(t)
	c := f.container(t)
	pods := f.pods()
	p2p := multiaddrPort(t, f.args(t).values["listen"])
	metricsPort := hostPortPort(t, f.args(t).values["metrics"])
	perPod := map[string]string{} // pod -> service
	var headless *corev1.Service
	for _, s := range f.services {
		sel := labels.SelectorFromSet(s.Spec.Selector)
		if len(s.Spec.Selector) == 0 {
			t.Errorf("Service %s: no selector", s.Name)
			continue
		}
		if sel.Matches(f.jobPodLabels()) {
			t.Errorf("Service %s selects the load generator pods", s.Name)
		}
		var matched []string
		for _, p := range pods {
			if sel.Matches(p.labels) {
				matched = append(matched, p.name)
			}
		}
		if s.Name == f.sts.Spec.ServiceName {
			headless = s
			if s.Spec.ClusterIP != corev1.ClusterIPNone {
				t.Errorf("Service %s governs the StatefulSet but is not headless", s.Name)
			}
			if len(matched) != len(pods) {
				t.Errorf("headless Service %s selects %v, want every pod", s.Name, matched)
			}
			continue
		}
		if _, ok := s.Spec.Selector[podNameLabel]; !ok {
			t.Errorf("Service %s: neither the governing Service nor per-pod (%s)", s.Name, podNameLabel)
			continue
		}
		if len(matched) != 1 {
			t.Errorf("per-pod Service %s selects %v, want exactly one pod", s.Name, matched)
			continue
		}
		if other, dup := perPod[matched[0]]; dup {
			t.Errorf("pod %s has two per-pod Services: %s and %s", matched[0], other, s.Name)
		}
		perPod[matched[0]] = s.Name
		if s.Spec.Type == corev1.ServiceTypeLoadBalancer || s.Spec.Type == corev1.ServiceTypeNodePort {
			if s.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
				t.Errorf("Service %s: externalTrafficPolicy %q: peers would arrive from node addresses and share the per-IP limits", s.Name, s.Spec.ExternalTrafficPolicy)
			}
		}
		for _, sp := range s.Spec.Ports {
			switch containerPort(t, c, sp.TargetPort) {
			case p2p:
			case metricsPort:
				t.Errorf("Service %s publishes the metrics and pprof port", s.Name)
			default:
				t.Errorf("Service %s: port %s targets no server port", s.Name, sp.Name)
			}
		}
	}
	if headless == nil {
		t.Fatalf("no Service %q (the StatefulSet's serviceName)", f.sts.Spec.ServiceName)
	}
	for _, p := range pods {
		if _, ok := perPod[p.name]; !ok {
			t.Errorf("pod %s has no per-pod Service: no stable dialable address", p.name)
		}
	}
}

// TestServiceMonitor: the ServiceMonitor selects exactly the headless
// Service, in the fleet's namespace, and scrapes its metrics port, which
// leads to the port -metrics listens on.
func TestServiceMonitor(t *testing.T) {
	f := loadFleet(t)
	c := f.container(t)
	sm := f.monitor.Spec
	if !sm.NamespaceSelector.Any && !slices.Contains(sm.NamespaceSelector.MatchNames, namespace) && f.monitor.Namespace != namespace {
		t.Errorf("ServiceMonitor does not look in namespace %s", namespace)
	}
	sel := selector(t, &sm.Selector)
	var selected []*corev1.Service
	for _, s := range f.services {
		if sel.Matches(labels.Set(s.Labels)) {
			selected = append(selected, s)
		}
	}
	if len(selected) != 1 || selected[0].Name != f.sts.Spec.ServiceName {
		var names []string
		for _, s := range selected {
			names = append(names, s.Name)
		}
		t.Fatalf("ServiceMonitor selects Services %v, want only %s (a per-pod Service too would scrape each node twice)", names, f.sts.Spec.ServiceName)
	}
	want := hostPortPort(t, f.args(t).values["metrics"])
	if len(sm.Endpoints) == 0 {
		t.Fatal("ServiceMonitor has no endpoints")
	}
	for _, ep := range sm.Endpoints {
		var sp *corev1.ServicePort
		for i := range selected[0].Spec.Ports {
			if selected[0].Spec.Ports[i].Name == ep.Port {
				sp = &selected[0].Spec.Ports[i]
			}
		}
		if sp == nil {
			t.Errorf("endpoint port %q is not a port of Service %s", ep.Port, selected[0].Name)
			continue
		}
		if got := containerPort(t, c, sp.TargetPort); got != want {
			t.Errorf("endpoint port %q leads to container port %d, -metrics is on %d", ep.Port, got, want)
		}
		if ep.Path != "" && ep.Path != "/metrics" {
			t.Errorf("endpoint path %q, want /metrics", ep.Path)
		}
	}
}

// TestNetworkPolicy: the policy selects the fleet's pods, admits the p2p
// port from anywhere and the metrics port only from named sources.
func TestNetworkPolicy(t *testing.T) {
	f := loadFleet(t)
	sel := selector(t, &f.netpol.Spec.PodSelector)
	for _, p := range f.pods() {
		if !sel.Matches(p.labels) {
			t.Errorf("NetworkPolicy does not select pod %s", p.name)
		}
	}
	p2p := multiaddrPort(t, f.args(t).values["listen"])
	metrics := hostPortPort(t, f.args(t).values["metrics"])
	p2pOpen := false
	for _, r := range f.netpol.Spec.Ingress {
		for _, p := range r.Ports {
			if p.Port == nil {
				t.Errorf("an ingress rule admits every port")
				continue
			}
			switch p.Port.IntVal {
			case p2p:
				p2pOpen = p2pOpen || len(r.From) == 0
			case metrics:
				if len(r.From) == 0 {
					t.Errorf("the metrics and pprof port %d is open to every source", metrics)
				}
			}
		}
		if len(r.Ports) == 0 && len(r.From) == 0 {
			t.Errorf("an ingress rule admits everything")
		}
	}
	if !p2pOpen {
		t.Errorf("the p2p port %d is not open to peers", p2p)
	}
}

// TestPodSizing: the pod's memory limit holds max-conns idle connections
// at the measured per-connection figures (server RSS, kernel slab charged
// to the cgroup, a queued page on a quarter of them) plus the memory
// budget; GOMEMLIMIT leaves the kernel's share; memory is reserved
// (request = limit); the node's container file limit holds max-conns.
func TestPodSizing(t *testing.T) {
	f := loadFleet(t)
	c := f.container(t)
	args, cfg := f.args(t), f.serverConfig(t)
	conns := maxConns(t, args, cfg)
	budget := memoryBudget(t, args, cfg)
	lim, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok {
		t.Fatal("no memory limit")
	}
	if req := c.Resources.Requests[corev1.ResourceMemory]; req.Cmp(lim) != 0 {
		t.Errorf("memory request %s != limit %s: an OOM kill ends every connection at once; reserve the memory", req.String(), lim.String())
	}
	if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok {
		t.Error("no CPU request")
	}
	need := conns*(rssPerConn+kernelPerConn+queuedPerConn) + budget
	if need > lim.Value() {
		t.Errorf("max-conns %d needs %d MB (at %d B RSS + %d B kernel + %d B queued per connection, + %d MB budget), memory limit is %d MB",
			conns, need>>20, rssPerConn, kernelPerConn, queuedPerConn, budget>>20, lim.Value()>>20)
	}
	var gomem string
	for _, e := range c.Env {
		if e.Name == "GOMEMLIMIT" {
			gomem = e.Value
		}
	}
	if gomem == "" {
		t.Fatal("no GOMEMLIMIT: the Go heap does not know the container's limit")
	}
	gl, err := parseBytes(gomem)
	if err != nil {
		t.Fatal(err)
	}
	if gl < conns*rssPerConn+budget {
		t.Errorf("GOMEMLIMIT %s < what max-conns idle connections and the budget hold (%d MB): the GC would run constantly", gomem, (conns*rssPerConn+budget)>>20)
	}
	if gl+conns*(kernelPerConn+queuedPerConn) > lim.Value() {
		t.Errorf("GOMEMLIMIT %s + kernel memory of %d connections exceeds the limit %s", gomem, conns, lim.String())
	}
	nofile := unitValue(t, parseUnit(t, readFile(t, "systemd", "containerd-nofile.conf")), "Service", "LimitNOFILE")
	n, err := strconv.ParseInt(nofile, 10, 64)
	if err != nil {
		t.Fatalf("containerd-nofile.conf LimitNOFILE %q: %v", nofile, err)
	}
	if conns+fdHeadroom > n {
		t.Errorf("max-conns %d + %d > the container file limit %d (containerd-nofile.conf)", conns, fdHeadroom, n)
	}
	t.Logf("max-conns %d: %d MB of %d MB limit, GOMEMLIMIT %s, %d of %d descriptors", conns, need>>20, lim.Value()>>20, gomem, conns+fdHeadroom, n)
}

// TestServerFlagsKnown: every flag on the server's command line is one
// the server has.
func TestServerFlagsKnown(t *testing.T) {
	f := loadFleet(t)
	for _, name := range f.args(t).names {
		if !knownFlags[name] {
			t.Errorf("StatefulSet: -%s is not a server flag", name)
		}
	}
	f.serverConfig(t) // checks the ConfigMap's keys
}

// TestLoadgenJob: N generator pods, one per machine and none beside a node
// under test, target a pod of the StatefulSet by its stable in-cluster
// name and port, and write JSON reports.
func TestLoadgenJob(t *testing.T) {
	f := loadFleet(t)
	j := f.job.Spec
	if j.Completions == nil || j.Parallelism == nil || *j.Completions != *j.Parallelism || *j.Parallelism < 2 {
		t.Errorf("completions %v, parallelism %v: want N >= 2 generators all at once", j.Completions, j.Parallelism)
	}
	if j.CompletionMode == nil || *j.CompletionMode != batchv1.IndexedCompletion {
		t.Errorf("completionMode not Indexed: reports could not be told apart by index")
	}
	if len(j.Template.Spec.Containers) != 1 {
		t.Fatalf("Job: %d containers, want 1", len(j.Template.Spec.Containers))
	}
	c := j.Template.Spec.Containers[0]
	args, pos := parseArgs(c.Args)
	if len(pos) == 0 || pos[0] != "run" {
		t.Fatalf("loadgen args %q: want the run subcommand", c.Args)
	}
	target := args.values["target"]
	wantHost := fmt.Sprintf("/dns4/%s.%s.%s.svc.cluster.local/", f.pods()[0].name, f.sts.Spec.ServiceName, namespace)
	if !strings.HasPrefix(target, wantHost) {
		t.Errorf("-target %q does not name a pod of the StatefulSet by its stable name (%s…)", target, wantHost)
	}
	if got, want := multiaddrPort(t, target), multiaddrPort(t, f.args(t).values["listen"]); got != want {
		t.Errorf("-target port %d, the server listens on %d", got, want)
	}
	if _, ok := args.values["json"]; !ok {
		t.Error("loadgen without -json: nothing for loadgen merge")
	}
	if args.values["profiles"] != "none" {
		t.Error("loadgen writes profiles under the working directory: the root file system is read-only; pass -profiles=none")
	}
	aff := j.Template.Spec.Affinity
	if aff == nil || aff.PodAntiAffinity == nil {
		t.Fatal("generators have no anti-affinity: several could share one machine's ports and CPU")
	}
	selfApart, serverApart := false, false
	for _, term := range aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
		if term.TopologyKey != "kubernetes.io/hostname" {
			continue
		}
		sel := selector(t, term.LabelSelector)
		selfApart = selfApart || sel.Matches(f.jobPodLabels())
		serverApart = serverApart || sel.Matches(f.pods()[0].labels)
	}
	if !selfApart || !serverApart {
		t.Errorf("required anti-affinity: one generator per machine %v, none beside a server %v", selfApart, serverApart)
	}
}

// TestManifestFilesExist guards the paths the other tests read.
func TestManifestFilesExist(t *testing.T) {
	for _, p := range []string{"kubernetes/statefulset.yaml", "kubernetes/services.yaml", "kubernetes/pdb.yaml",
		"kubernetes/servicemonitor.yaml", "kubernetes/loadgen/job.yaml", "README.md"} {
		if _, err := os.Stat(filepath.FromSlash(p)); err != nil {
			t.Error(err)
		}
	}
}
