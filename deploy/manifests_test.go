package deploy_test

import (
	"bytes"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/mutexd/mutexd/internal/config"
)

// mutexdEnv is every environment variable mutexd reads: MUTEXD_<KEY> for
// each configuration key, and the ones cmd/mutexd reads itself
// (MUTEXD_ADDR for the client commands).
func mutexdEnv(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, k := range config.Keys() {
		out = append(out, config.EnvPrefix+"_"+strings.ToUpper(strings.ReplaceAll(k, ".", "_")))
	}
	return append(out, getenvNames(t, "cmd/mutexd")...)
}

// getenvNames lists the string literals passed to os.Getenv or
// os.LookupEnv in the non-test Go files of dir.
func getenvNames(t *testing.T, dir string) []string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(repoFile(t, dir+"/*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) != 1 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "Getenv" && sel.Sel.Name != "LookupEnv") {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "os" {
				return true
			}
			if lit, ok := call.Args[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if s, err := strconv.Unquote(lit.Value); err == nil && !slices.Contains(out, s) {
					out = append(out, s)
				}
			}
			return true
		})
	}
	if len(out) == 0 && dir == "deploy/demo" {
		t.Fatalf("found no os.Getenv calls in %s", dir)
	}
	return out
}

// imageListen is the listen address the image sets (its ENV MUTEXD_LISTEN).
func imageListen(t *testing.T) string {
	t.Helper()
	for _, in := range readDockerfile(t) {
		if k, v, ok := strings.Cut(in.args, "="); in.cmd == "ENV" && ok && k == "MUTEXD_LISTEN" {
			return v
		}
	}
	t.Fatal("Dockerfile sets no MUTEXD_LISTEN")
	return ""
}

// portOf returns the port of a host:port listen address.
func portOf(t *testing.T, listen string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		t.Fatalf("listen address %q: %v", listen, err)
	}
	return port
}

// envMap accepts compose's two spellings of environment: a map or a list
// of NAME=value.
type envMap map[string]string

func (e *envMap) UnmarshalYAML(n *yaml.Node) error {
	*e = envMap{}
	if n.Kind == yaml.SequenceNode {
		var list []string
		if err := n.Decode(&list); err != nil {
			return err
		}
		for _, kv := range list {
			k, v, _ := strings.Cut(kv, "=")
			(*e)[k] = v
		}
		return nil
	}
	var m map[string]string
	err := n.Decode(&m)
	for k, v := range m {
		(*e)[k] = v
	}
	return err
}

type composeBuild struct {
	Context string            `yaml:"context"`
	Target  string            `yaml:"target"`
	Args    map[string]string `yaml:"args"`
}

type composeService struct {
	Build       *composeBuild `yaml:"build"`
	Image       string        `yaml:"image"`
	Command     []string      `yaml:"command"`
	Environment envMap        `yaml:"environment"`
	Ports       []string      `yaml:"ports"`
	Volumes     []string      `yaml:"volumes"`
	NetworkMode string        `yaml:"network_mode"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

// mount is a bind mount: a repository path at a container path.
type mount struct{ host, container string }

func mounts(t *testing.T, svc string, vols []string) []mount {
	t.Helper()
	var out []mount
	for _, v := range vols {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || !strings.HasPrefix(parts[0], "./") {
			t.Errorf("service %s: volume %q is not a ./repository-path:/container-path bind mount", svc, v)
			continue
		}
		host := path.Clean(parts[0])
		if _, err := os.Stat(repoFile(t, host)); err != nil {
			t.Errorf("service %s mounts %s, which does not exist: %v", svc, host, err)
		}
		out = append(out, mount{host: host, container: path.Clean(parts[1])})
	}
	return out
}

// containerFile maps a container path back to the repository file mounted
// there (directly or inside a mounted directory); ok is false when none is.
func containerFile(ms []mount, p string) (string, bool) {
	for _, m := range ms {
		if p == m.container {
			return m.host, true
		}
		if rel, ok := strings.CutPrefix(p, m.container+"/"); ok {
			return path.Join(m.host, rel), true
		}
	}
	return "", false
}

// TestComposeFile checks docker-compose.yml against the repository and
// mutexd: every mounted file exists, mutexd and the demo get only
// environment variables they read, published ports are the ones they
// listen on (on loopback only), the demo reaches mutexd through the shared
// network namespace, Prometheus scrapes the mutexd service and loads the
// rules, and Grafana's provisioning finds the data source and every
// dashboard in deploy/grafana.
func TestComposeFile(t *testing.T) {
	c := readCompose(t, "docker-compose.yml")
	byImage := func(prefix string) (string, composeService) {
		t.Helper()
		for name, s := range c.Services {
			if strings.HasPrefix(s.Image, prefix) {
				return name, s
			}
		}
		t.Fatalf("docker-compose.yml has no service with image %s*", prefix)
		return "", composeService{}
	}

	// mutexd: the image's final stage.
	mName, m := byImage("mutexd:")
	if m.Build == nil || m.Build.Target != "" {
		t.Errorf("service %s must build the Dockerfile's final stage", mName)
	}
	port := checkMutexdService(t, mName, m)
	mounts(t, mName, m.Volumes)

	// The demo app: mutexd's network namespace, mutexd on loopback.
	checkDemoService(t, c, mName, port)

	// Prometheus: the shipped config and every rule file it names.
	pName, p := byImage("prom/prometheus:")
	scraped := scrapedTargets(t, pName, p, "deploy/prometheus/prometheus.yml")
	if !slices.Contains(scraped, net.JoinHostPort(mName, port)) {
		t.Errorf("prometheus.yml job mutexd does not scrape %s", net.JoinHostPort(mName, port))
	}

	// Grafana: provisioning, data source and dashboards.
	gName, g := byImage("grafana/grafana")
	checkGrafanaService(t, gName, g, pName)
}

// composeFile is a compose file as far as the tests read it.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]yaml.Node      `yaml:"volumes"`
}

// readCompose reads a compose file (a path from the repository root) and
// checks what holds for every service of both: only top-level keys
// docker-compose 1.29 accepts (and `docker-compose config` passes where it
// is installed), ports published on loopback only, builds from the
// repository with a target the Dockerfile has.
func readCompose(t *testing.T, rel string) composeFile {
	t.Helper()
	// Compose v1.29 (Debian's docker-compose) knows only these top-level
	// keys; v2's name: makes it reject the whole file.
	var top map[string]yaml.Node
	unmarshalYAML(t, rel, &top)
	for k := range top {
		if !slices.Contains([]string{"version", "services", "networks", "volumes", "secrets", "configs"}, k) && !strings.HasPrefix(k, "x-") {
			t.Errorf("%s: top-level key %q, which docker-compose 1.29 rejects", rel, k)
		}
	}
	if path, err := exec.LookPath("docker-compose"); err == nil {
		// Validates the file as Compose v1 reads it; needs no Docker engine.
		runTool(t, repoRoot(t), nil, path, "--file", rel, "config", "--quiet")
	}

	var c composeFile
	dec := yaml.NewDecoder(bytes.NewReader(readFile(t, rel)))
	dec.KnownFields(false)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	stages := map[string]bool{}
	for _, in := range readDockerfile(t) {
		if f := strings.Fields(in.args); in.cmd == "FROM" && len(f) == 3 && strings.EqualFold(f[1], "AS") {
			stages[f[2]] = true
		}
	}
	for name, s := range c.Services {
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("service %s publishes %q beyond loopback; want 127.0.0.1:host:container", name, p)
			}
		}
		if s.Build != nil {
			if s.Build.Context != "." {
				t.Errorf("service %s builds from %q, want . (the Dockerfile's context)", name, s.Build.Context)
			}
			if s.Build.Target != "" && !stages[s.Build.Target] {
				t.Errorf("service %s builds target %q, which the Dockerfile lacks", name, s.Build.Target)
			}
		}
	}

	return c
}

// checkMutexdService checks a mutexd service: only variables mutexd reads,
// ports published to the one it listens on, the image's HEALTHCHECK kept.
// It returns the port.
func checkMutexdService(t *testing.T, mName string, m composeService) string {
	t.Helper()
	allowed := mutexdEnv(t)
	listen := imageListen(t)
	for k, v := range m.Environment {
		if !slices.Contains(allowed, k) {
			t.Errorf("service %s sets %s, which mutexd does not read (it reads %v)", mName, k, allowed)
		}
		if k == "MUTEXD_LISTEN" {
			listen = v
		}
	}
	port := portOf(t, listen)
	for _, p := range m.Ports {
		if parts := strings.Split(p, ":"); parts[len(parts)-1] != port {
			t.Errorf("service %s publishes %q, but mutexd listens on %s", mName, p, listen)
		}
	}
	if m.Healthcheck != nil {
		t.Errorf("service %s overrides the image's HEALTHCHECK; keep the image's", mName)
	}
	return port
}

// checkDemoService checks the demo app: in the network namespace of the
// mutexd service mName (a pod's sidecar), calling it on loopback at port.
func checkDemoService(t *testing.T, c composeFile, mName, port string) {
	t.Helper()
	dName, d := "", composeService{}
	for name, s := range c.Services {
		if strings.HasPrefix(s.Image, "mutexd-demo:") {
			dName, d = name, s
		}
	}
	if dName == "" {
		t.Fatal("no service with image mutexd-demo:*")
	}
	if d.NetworkMode != "service:"+mName {
		t.Errorf("service %s: network_mode %q, want service:%s (a sidecar shares the network namespace)", dName, d.NetworkMode, mName)
	}
	if len(d.Ports) > 0 {
		t.Errorf("service %s publishes ports; it shares %s's network", dName, mName)
	}
	demoEnv := getenvNames(t, "deploy/demo")
	for k := range d.Environment {
		if !slices.Contains(demoEnv, k) {
			t.Errorf("service %s sets %s, which the demo does not read (it reads %v)", dName, k, demoEnv)
		}
	}
	if got, want := d.Environment["DEMO_MUTEXD"], "http://127.0.0.1:"+port; got != want {
		t.Errorf("service %s: DEMO_MUTEXD=%q, want %q", dName, got, want)
	}
}

// scrapedTargets checks that the Prometheus service reads wantCfg (a path
// from the repository root) and every rule file it names, and returns the
// targets of its job "mutexd" (the job the alerts select).
func scrapedTargets(t *testing.T, pName string, p composeService, wantCfg string) []string {
	t.Helper()
	pm := mounts(t, pName, p.Volumes)
	cfgPath := ""
	for _, a := range p.Command {
		if v, ok := strings.CutPrefix(a, "--config.file="); ok {
			cfgPath = v
		}
	}
	if cfgPath == "" {
		cfgPath = "/etc/prometheus/prometheus.yml" // the image's default
	}
	if host, ok := containerFile(pm, cfgPath); !ok || host != wantCfg {
		t.Errorf("service %s reads %s, mounted from %q; want %s", pName, cfgPath, host, wantCfg)
	}
	var prom struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	unmarshalYAML(t, wantCfg, &prom)
	for _, rf := range prom.RuleFiles {
		if host, ok := containerFile(pm, path.Join(path.Dir(cfgPath), rf)); !ok || host != "deploy/prometheus/"+rf {
			t.Errorf("service %s: rule file %s is not mounted from deploy/prometheus/%s", pName, rf, rf)
		}
	}
	var scraped []string
	for _, sc := range prom.ScrapeConfigs {
		if sc.JobName != "mutexd" {
			continue
		}
		if sc.MetricsPath != "" && sc.MetricsPath != config.Default().Metrics.Path {
			t.Errorf("%s scrapes %s, mutexd serves %s", wantCfg, sc.MetricsPath, config.Default().Metrics.Path)
		}
		for _, st := range sc.StaticConfigs {
			scraped = append(scraped, st.Targets...)
		}
	}
	return scraped
}

// checkGrafanaService checks Grafana's provisioning: the data source is the
// Prometheus service pName, and every dashboard in deploy/grafana is
// mounted where the dashboard provider reads.
func checkGrafanaService(t *testing.T, gName string, g composeService, pName string) {
	t.Helper()
	gm := mounts(t, gName, g.Volumes)
	prov, ok := containerFile(gm, "/etc/grafana/provisioning")
	if !ok || prov != "deploy/grafana/provisioning" {
		t.Fatalf("service %s: /etc/grafana/provisioning is mounted from %q, want deploy/grafana/provisioning", gName, prov)
	}
	var ds struct {
		Datasources []struct {
			Type, URL string
			IsDefault bool `yaml:"isDefault"`
		} `yaml:"datasources"`
	}
	unmarshalYAML(t, "deploy/grafana/provisioning/datasources/prometheus.yml", &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || !ds.Datasources[0].IsDefault ||
		ds.Datasources[0].URL != "http://"+pName+":9090" {
		t.Errorf("provisioned data sources %+v, want one default prometheus at http://%s:9090", ds.Datasources, pName)
	}
	var dp struct {
		Providers []struct {
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	unmarshalYAML(t, "deploy/grafana/provisioning/dashboards/mutexd.yml", &dp)
	if len(dp.Providers) != 1 || dp.Providers[0].Type != "file" {
		t.Fatalf("dashboard providers %+v, want one of type file", dp.Providers)
	}
	provPath := dp.Providers[0].Options.Path
	jsons, _ := filepath.Glob(repoFile(t, "deploy/grafana/*.json"))
	if len(jsons) == 0 {
		t.Fatal("no dashboards in deploy/grafana")
	}
	for _, j := range jsons {
		rel := "deploy/grafana/" + filepath.Base(j)
		found := false
		for _, mt := range gm {
			if mt.host == rel && strings.HasPrefix(mt.container, provPath+"/") {
				found = true
			}
		}
		if !found {
			t.Errorf("%s is not mounted under the dashboard provider's path %s", rel, provPath)
		}
	}
	if home := g.Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]; home != "" {
		if host, ok := containerFile(gm, home); !ok || host != "deploy/grafana/mutexd.json" {
			t.Errorf("service %s: home dashboard %s is mounted from %q, want deploy/grafana/mutexd.json", gName, home, host)
		}
	}
	if g.Environment["GF_AUTH_ANONYMOUS_ENABLED"] != "true" || g.Environment["GF_AUTH_ANONYMOUS_ORG_ROLE"] != "Viewer" {
		t.Errorf("service %s: want anonymous Viewer access, got %v", gName, g.Environment)
	}
	if !slices.Contains(g.Ports, "127.0.0.1:3000:3000") {
		t.Errorf("service %s publishes %v, want 127.0.0.1:3000:3000", gName, g.Ports)
	}
}

// Kubernetes objects, as far as the test reads them.
type (
	k8sEnv struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
			FieldRef *struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	}
	k8sProbe struct {
		HTTPGet *struct {
			Path string `yaml:"path"`
			Port any    `yaml:"port"`
		} `yaml:"httpGet"`
		PeriodSeconds    int `yaml:"periodSeconds"`
		TimeoutSeconds   int `yaml:"timeoutSeconds"`
		FailureThreshold int `yaml:"failureThreshold"`
	}
	k8sContainer struct {
		Name          string   `yaml:"name"`
		Image         string   `yaml:"image"`
		RestartPolicy string   `yaml:"restartPolicy"`
		Env           []k8sEnv `yaml:"env"`
		Ports         []struct {
			Name          string `yaml:"name"`
			ContainerPort int    `yaml:"containerPort"`
		} `yaml:"ports"`
		StartupProbe   *k8sProbe `yaml:"startupProbe"`
		ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
		LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
		Resources      struct {
			Requests map[string]string `yaml:"requests"`
			Limits   map[string]string `yaml:"limits"`
		} `yaml:"resources"`
		SecurityContext *struct {
			ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
			AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
			RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
			RunAsUser                *int  `yaml:"runAsUser"`
		} `yaml:"securityContext"`
		VolumeMounts []struct {
			Name      string `yaml:"name"`
			MountPath string `yaml:"mountPath"`
		} `yaml:"volumeMounts"`
	}
	k8sObject struct {
		Kind     string `yaml:"kind"`
		Metadata struct {
			Name        string            `yaml:"name"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"metadata"`
		Spec struct {
			Selector yaml.Node `yaml:"selector"`
			Ports    []struct {
				Name       string `yaml:"name"`
				Port       int    `yaml:"port"`
				TargetPort any    `yaml:"targetPort"`
			} `yaml:"ports"`
			// Service
			ClusterIP                string `yaml:"clusterIP"`
			PublishNotReadyAddresses bool   `yaml:"publishNotReadyAddresses"`
			// StatefulSet
			ServiceName          string `yaml:"serviceName"`
			Replicas             *int   `yaml:"replicas"`
			PodManagementPolicy  string `yaml:"podManagementPolicy"`
			VolumeClaimTemplates []struct {
				Metadata struct {
					Name string `yaml:"name"`
				} `yaml:"metadata"`
			} `yaml:"volumeClaimTemplates"`
			// PodDisruptionBudget
			MaxUnavailable any `yaml:"maxUnavailable"`
			MinAvailable   any `yaml:"minAvailable"`
			Template       struct {
				Metadata struct {
					Labels      map[string]string `yaml:"labels"`
					Annotations map[string]string `yaml:"annotations"`
				} `yaml:"metadata"`
				Spec struct {
					SecurityContext struct {
						RunAsNonRoot *bool `yaml:"runAsNonRoot"`
						RunAsUser    *int  `yaml:"runAsUser"`
						FSGroup      *int  `yaml:"fsGroup"`
					} `yaml:"securityContext"`
					InitContainers []k8sContainer          `yaml:"initContainers"`
					Containers     []k8sContainer          `yaml:"containers"`
					Volumes        []struct{ Name string } `yaml:"volumes"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
)

// The Kubernetes examples: a standalone mutexd as an app's sidecar, and a
// three-server cluster with a mutexd agent as the app's sidecar.
const (
	standaloneManifest = "deploy/kubernetes/standalone/sidecar.yaml"
	serversManifest    = "deploy/kubernetes/cluster/servers.yaml"
	agentAppManifest   = "deploy/kubernetes/cluster/app.yaml"
)

// readKubernetes decodes every document of a manifest (a path from the
// repository root).
func readKubernetes(t *testing.T, rel string) []k8sObject {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(readFile(t, rel)))
	var out []k8sObject
	for {
		var o k8sObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		out = append(out, o)
	}
}

// sidecarMutexd returns the standalone example's Deployment and its mutexd
// container: the one the memory sizing is measured against.
func sidecarMutexd(t *testing.T) (k8sObject, k8sContainer) {
	t.Helper()
	return appMutexd(t, standaloneManifest, readKubernetes(t, standaloneManifest))
}

// appMutexd returns the Deployment of objs (read from rel) and its mutexd
// container.
func appMutexd(t *testing.T, rel string, objs []k8sObject) (k8sObject, k8sContainer) {
	t.Helper()
	for _, o := range objs {
		if o.Kind != "Deployment" {
			continue
		}
		ps := o.Spec.Template.Spec
		for _, c := range append(slices.Clone(ps.InitContainers), ps.Containers...) {
			if strings.HasPrefix(c.Image, "mutexd:") {
				return o, c
			}
		}
	}
	t.Fatalf("%s has no Deployment with a mutexd container", rel)
	return k8sObject{}, k8sContainer{}
}

// TestKubernetesFile checks the app manifests, the standalone sidecar and
// the cluster's agent sidecar: a Deployment whose mutexd sidecar gets only
// variables mutexd reads, probes /healthz and /readyz on the port it
// listens on, has resource requests and limits, runs non-root on a
// read-only root filesystem; an app container that reaches it on
// loopback; scrape annotations and a Service that match.
func TestKubernetesFile(t *testing.T) {
	for _, rel := range []string{standaloneManifest, agentAppManifest} {
		t.Run(path.Base(path.Dir(rel)), func(t *testing.T) {
			if rel == agentAppManifest {
				requireAgentRole(t)
			}
			checkAppManifest(t, rel)
		})
	}
}

// checkAppManifest is TestKubernetesFile for one manifest.
func checkAppManifest(t *testing.T, rel string) {
	objs := readKubernetes(t, rel)
	dep, m := appMutexd(t, rel, objs)
	ps := dep.Spec.Template.Spec

	listen := imageListen(t)
	allowed := mutexdEnv(t)
	adminSecret := ""
	for _, e := range m.Env {
		if !slices.Contains(allowed, e.Name) && !slices.Contains(goRuntimeEnv, e.Name) {
			t.Errorf("mutexd container sets %s, which neither mutexd nor the Go runtime reads", e.Name)
		}
		if e.Name == "MUTEXD_LISTEN" {
			listen = e.Value
		}
		if e.Name == "MUTEXD_AUTH_ADMIN_TOKENS" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			adminSecret = e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
		}
	}
	if listen != "" && !strings.HasPrefix(listen, "127.0.0.1:") && adminSecret == "" {
		t.Errorf("mutexd listens on %s, beyond the pod, without tokens from a Secret", listen)
	}
	port := portOf(t, listen)
	portName := ""
	for _, p := range m.Ports {
		if strconv.Itoa(p.ContainerPort) == port {
			portName = p.Name
		} else {
			t.Errorf("mutexd container declares port %d, but mutexd listens on %s", p.ContainerPort, listen)
		}
	}
	if portName == "" {
		t.Errorf("mutexd container declares no named port %s", port)
	}
	probePort := func(v any) string {
		if s, ok := v.(string); ok && s == portName {
			return port
		}
		return strings.TrimSpace(strings.Trim(strings.TrimSpace(toString(v)), `"`))
	}
	// /readyz answers 503 for all of lock.restart_grace: only readiness
	// may ask it. A startup or liveness probe on it has the kubelet kill
	// mutexd in a loop whenever the grace outlasts the probe's patience.
	// A native sidecar needs the startupProbe: it holds the app back until
	// mutexd serves.
	for _, pr := range []struct {
		name  string
		probe *k8sProbe
		path  string
	}{
		{"livenessProbe", m.LivenessProbe, "/healthz"},
		{"readinessProbe", m.ReadinessProbe, "/readyz"},
		{"startupProbe", m.StartupProbe, "/healthz"},
	} {
		if pr.probe == nil || pr.probe.HTTPGet == nil {
			t.Errorf("mutexd container has no %s httpGet", pr.name)
			continue
		}
		if pr.probe.HTTPGet.Path != pr.path || probePort(pr.probe.HTTPGet.Port) != port {
			t.Errorf("%s GET %s on port %v, want %s on %s", pr.name, pr.probe.HTTPGet.Path, pr.probe.HTTPGet.Port, pr.path, port)
		}
	}
	if slices.ContainsFunc(ps.InitContainers, func(c k8sContainer) bool { return c.Name == m.Name }) && m.RestartPolicy != "Always" {
		t.Errorf("mutexd is an init container without restartPolicy: Always: it would have to exit before the app starts")
	}
	for _, r := range []string{"cpu", "memory"} {
		if m.Resources.Requests[r] == "" {
			t.Errorf("mutexd container requests no %s", r)
		}
	}
	if m.Resources.Limits["memory"] == "" {
		t.Errorf("mutexd container has no memory limit")
	}

	sc := ps.SecurityContext
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
		t.Errorf("pod securityContext must set runAsNonRoot: true and a non-zero runAsUser")
	}
	volumes := map[string]bool{}
	for _, v := range ps.Volumes {
		volumes[v.Name] = true
	}
	demoEnv := getenvNames(t, "deploy/demo")
	for _, c := range append(slices.Clone(ps.InitContainers), ps.Containers...) {
		if c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem {
			t.Errorf("container %s: want readOnlyRootFilesystem: true", c.Name)
		}
		if c.SecurityContext == nil || c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
			t.Errorf("container %s: want allowPrivilegeEscalation: false", c.Name)
		}
		for _, vm := range c.VolumeMounts {
			if !volumes[vm.Name] {
				t.Errorf("container %s mounts volume %s, which the pod does not define", c.Name, vm.Name)
			}
		}
		if c.Name == m.Name {
			continue
		}
		if strings.HasPrefix(c.Image, "mutexd-demo:") {
			for _, e := range c.Env {
				if !slices.Contains(demoEnv, e.Name) {
					t.Errorf("container %s sets %s, which the demo does not read", c.Name, e.Name)
				}
				if e.Name == "DEMO_MUTEXD" && e.Value != "http://127.0.0.1:"+port {
					t.Errorf("container %s: DEMO_MUTEXD=%s, want http://127.0.0.1:%s", c.Name, e.Value, port)
				}
				if e.Name == "DEMO_TOKEN" {
					if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil ||
						e.ValueFrom.SecretKeyRef.Name+"/"+e.ValueFrom.SecretKeyRef.Key != adminSecret {
						t.Errorf("container %s: DEMO_TOKEN must come from mutexd's admin token Secret %s (the demo lists and force-releases)", c.Name, adminSecret)
					}
				}
			}
		}
	}

	ann := dep.Spec.Template.Metadata.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != port || ann["prometheus.io/path"] != config.Default().Metrics.Path {
		t.Errorf("pod annotations %v, want prometheus.io/scrape true, port %s, path %s", ann, port, config.Default().Metrics.Path)
	}

	services := 0
	for _, o := range objs {
		if o.Kind != "Service" {
			continue
		}
		services++
		var sel map[string]string
		if err := o.Spec.Selector.Decode(&sel); err != nil {
			t.Fatal(err)
		}
		for k, v := range sel {
			if dep.Spec.Template.Metadata.Labels[k] != v {
				t.Errorf("Service %s selects %s=%s, which the pods do not carry", o.Metadata.Name, k, v)
			}
		}
		for _, p := range o.Spec.Ports {
			// A named targetPort resolves to an init container's port
			// (a native sidecar's) only from Kubernetes 1.32.
			if tp, ok := p.TargetPort.(int); !ok || strconv.Itoa(tp) != port {
				t.Errorf("Service %s targets port %#v, want the number %s (mutexd's port; a name does not resolve to a native sidecar's port before Kubernetes 1.32)", o.Metadata.Name, p.TargetPort, port)
			}
		}
	}
	if services != 1 {
		t.Errorf("%s has %d Services, want 1", rel, services)
	}
}

func toString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case int:
		return strconv.Itoa(v)
	default:
		return ""
	}
}
