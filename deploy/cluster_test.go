package deploy_test

import (
	"fmt"
	stdmaps "maps"
	"net"
	"net/url"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/mutexd/mutexd/internal/config"
)

// requireAgentRole fails the test, in one line that says why, when this
// build's configuration has no agent role: the cluster deploy files give
// their app sidecar `cluster: {role: agent, servers: [...]}` (issue 14),
// and every check of those would otherwise fail in its own words.
func requireAgentRole(t *testing.T) {
	t.Helper()
	keys := config.Keys()
	if !slices.Contains(keys, "cluster.role") || !slices.Contains(keys, "cluster.servers") {
		t.Fatal("this build's configuration has no agent role (keys cluster.role and cluster.servers): " +
			"the cluster deploy files run their app sidecar as an agent, so they cannot be checked against it")
	}
}

// loadMutexdConfig loads mutexd's configuration as the daemon would with
// exactly env as its MUTEXD_ environment (nothing inherited from the test's
// environment) and, when file is not empty, --config file.
func loadMutexdConfig(t *testing.T, env map[string]string, file string) (config.Config, error) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, config.EnvPrefix+"_") {
			t.Setenv(name, "") // restored after the test
			os.Unsetenv(name)
		}
	}
	for k, v := range env {
		if strings.HasPrefix(k, config.EnvPrefix+"_") {
			t.Setenv(k, v)
		}
	}
	fs := pflag.NewFlagSet("mutexd", pflag.ContinueOnError)
	config.AddFlags(fs)
	if file != "" {
		if err := fs.Parse([]string{"--config", file}); err != nil {
			t.Fatal(err)
		}
	}
	return config.Load(fs)
}

// apiPaths are the paths mutexd serves (internal/api/routes.go).
func apiPaths(t *testing.T) []string {
	t.Helper()
	var out []string
	re := regexp.MustCompile(`\{http\.MethodGet, "(/[^"]*)"`)
	for _, m := range re.FindAllStringSubmatch(string(readFile(t, "internal/api/routes.go")), -1) {
		out = append(out, m[1])
	}
	if !slices.Contains(out, "/healthz") {
		t.Fatalf("found no GET /healthz route in internal/api/routes.go (%v): the pattern no longer matches the route table", out)
	}
	return out
}

// hostPort splits an http(s) URL's host and port.
func hostPort(t *testing.T, raw string) (string, string) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		t.Errorf("%q is not an http:// URL", raw)
		return "", ""
	}
	return u.Hostname(), u.Port()
}

// TestComposeClusterFile checks docker-compose.cluster.yml as
// TestComposeFile checks docker-compose.yml, and the cluster in it: three
// servers, each loading its own configuration file with the real loader
// (node_id its service name, the same peers in all three, naming the
// services at the ports they listen on, data_dir in a volume of its own);
// an agent naming the three servers, with the demo in its network
// namespace; Prometheus scraping all four; Grafana provisioned.
func TestComposeClusterFile(t *testing.T) {
	const rel = "docker-compose.cluster.yml"
	c := readCompose(t, rel)

	// Every mutexd service reads its configuration file.
	type mutexd struct {
		name, port, file string
		raw              struct {
			Cluster struct {
				NodeID  string   `yaml:"node_id"`
				Role    string   `yaml:"role"`
				Servers []string `yaml:"servers"`
			} `yaml:"cluster"`
		}
		named []mount // named volumes: volume name, container path
	}
	var servers, agents []mutexd
	for _, name := range slices.Sorted(stdmaps.Keys(c.Services)) {
		s := c.Services[name]
		if !strings.HasPrefix(s.Image, "mutexd:") {
			continue
		}
		m := mutexd{name: name, port: checkMutexdService(t, name, s)}
		if s.Build == nil || s.Build.Target != "" {
			t.Errorf("service %s must build the Dockerfile's final stage (or Compose may try to pull %s)", name, s.Image)
		}
		var binds []string
		for _, v := range s.Volumes {
			if src, dst, ok := strings.Cut(v, ":"); ok && !strings.HasPrefix(src, ".") && !strings.HasPrefix(src, "/") {
				if _, declared := c.Volumes[src]; !declared {
					t.Errorf("service %s mounts volume %s, which the file does not declare", name, src)
				}
				dst, _, _ = strings.Cut(dst, ":")
				m.named = append(m.named, mount{host: src, container: path.Clean(dst)})
				continue
			}
			binds = append(binds, v)
		}
		ms := mounts(t, name, binds)
		cfgPath := ""
		for i, a := range s.Command {
			if a == "--config" && i+1 < len(s.Command) {
				cfgPath = s.Command[i+1]
			} else if v, ok := strings.CutPrefix(a, "--config="); ok {
				cfgPath = v
			}
		}
		host, ok := containerFile(ms, cfgPath)
		if cfgPath == "" || !ok {
			t.Errorf("service %s: command %q reads no configuration file mounted from the repository", name, s.Command)
			continue
		}
		if !strings.HasPrefix(host, "deploy/") {
			t.Errorf("service %s reads %s; keep the stack's files under deploy/", name, host)
		}
		m.file = host
		unmarshalYAML(t, host, &m.raw)
		if m.raw.Cluster.Role == "agent" {
			agents = append(agents, m)
		} else {
			servers = append(servers, m)
		}
	}
	if len(servers) != 3 || len(agents) != 1 {
		t.Fatalf("%s has %d mutexd servers and %d agents, want 3 and 1", rel, len(servers), len(agents))
	}

	// The servers, through the real configuration loader.
	var peers []config.Peer
	var ids, dataVolumes []string
	for _, sv := range servers {
		s := c.Services[sv.name]
		env := map[string]string{"MUTEXD_LISTEN": imageListen(t)}
		for k, v := range s.Environment {
			env[k] = v
		}
		cfg, err := loadMutexdConfig(t, env, repoFile(t, sv.file))
		if err != nil {
			t.Errorf("service %s: %s does not load: %v", sv.name, sv.file, err)
			continue
		}
		cl := cfg.Cluster
		if cl.NodeID != sv.name {
			t.Errorf("service %s: cluster.node_id %q, want the service's name (the name its peers dial)", sv.name, cl.NodeID)
		}
		ids = append(ids, sv.name)
		if peers == nil {
			peers = cl.Peers
		} else if !slices.Equal(peers, cl.Peers) {
			t.Errorf("service %s: cluster.peers %v differ from %s's %v; every server needs the same list", sv.name, cl.Peers, servers[0].name, peers)
		}
		if got := portOf(t, cfg.Listen); got != sv.port {
			t.Errorf("service %s listens on %s, its health check and ports expect %s", sv.name, cfg.Listen, sv.port)
		}
		if h, p, _ := net.SplitHostPort(cl.Advertise()); h != sv.name || p != portOf(t, cl.RaftListen) {
			t.Errorf("service %s advertises Raft at %s, want %s:<raft_listen's port %s>", sv.name, cl.Advertise(), sv.name, portOf(t, cl.RaftListen))
		}
		inVolume := false
		for _, nv := range sv.named {
			if cl.DataDir == nv.container || strings.HasPrefix(cl.DataDir, nv.container+"/") {
				inVolume = true
				if slices.Contains(dataVolumes, nv.host) {
					t.Errorf("service %s keeps its data_dir in volume %s, which another server uses", sv.name, nv.host)
				}
				dataVolumes = append(dataVolumes, nv.host)
			}
		}
		if !inVolume {
			t.Errorf("service %s: cluster.data_dir %s is in no named volume (its Raft log would be lost with the container; mounts %v)", sv.name, cl.DataDir, sv.named)
		}
	}
	var peerIDs []string
	for _, p := range peers {
		peerIDs = append(peerIDs, p.ID)
		svc := slices.IndexFunc(servers, func(s mutexd) bool { return s.name == p.ID })
		if svc < 0 {
			continue
		}
		if h, _, _ := net.SplitHostPort(p.Raft); h != p.ID {
			t.Errorf("peer %s: raft %s, want the service name %s", p.ID, p.Raft, p.ID)
		}
		if h, port := hostPort(t, p.API); h != p.ID || port != servers[svc].port {
			t.Errorf("peer %s: api %s, want http://%s:%s", p.ID, p.API, p.ID, servers[svc].port)
		}
	}
	slices.Sort(peerIDs)
	if !slices.Equal(peerIDs, ids) {
		t.Errorf("cluster.peers lists %v, want the servers %v", peerIDs, ids)
	}

	// The agent: the app's sidecar, naming every server.
	agent := agents[0]
	var want []string
	for _, sv := range servers {
		want = append(want, "http://"+net.JoinHostPort(sv.name, sv.port))
	}
	if got := slices.Sorted(slices.Values(agent.raw.Cluster.Servers)); !slices.Equal(got, want) {
		t.Errorf("agent %s: cluster.servers %v, want %v", agent.name, agent.raw.Cluster.Servers, want)
	}
	if len(agent.named) > 0 {
		t.Errorf("agent %s mounts volumes %v; an agent keeps no state", agent.name, agent.named)
	}
	checkDemoService(t, c, agent.name, agent.port)

	// Prometheus scrapes the three servers and the agent.
	var pName, gName string
	for name, s := range c.Services {
		switch {
		case strings.HasPrefix(s.Image, "prom/prometheus:"):
			pName = name
		case strings.HasPrefix(s.Image, "grafana/grafana"):
			gName = name
		}
	}
	if pName == "" || gName == "" {
		t.Fatalf("%s needs a Prometheus and a Grafana service", rel)
	}
	scraped := scrapedTargets(t, pName, c.Services[pName], "deploy/prometheus/prometheus-cluster.yml")
	for _, m := range append(slices.Clone(servers), agent) {
		if !slices.Contains(scraped, net.JoinHostPort(m.name, m.port)) {
			t.Errorf("prometheus-cluster.yml job mutexd does not scrape %s", net.JoinHostPort(m.name, m.port))
		}
	}
	if len(scraped) != 4 {
		t.Errorf("prometheus-cluster.yml job mutexd scrapes %v, want the three servers and the agent", scraped)
	}
	checkGrafanaService(t, gName, c.Services[gName], pName)

	// Last, as it fails until the agent role is in the configuration.
	requireAgentRole(t)
	if _, err := loadMutexdConfig(t, map[string]string{"MUTEXD_LISTEN": imageListen(t)}, repoFile(t, agent.file)); err != nil {
		t.Errorf("agent %s: %s does not load: %v", agent.name, agent.file, err)
	}
}

// podEnv is a container's environment as Kubernetes gives it to the pod
// named pod in namespace ns: fieldRefs resolved, a Secret's key as a
// placeholder token, and $(VAR) replaced by the value of a variable
// defined above it (an unknown one stays as written, as Kubernetes leaves
// it).
func podEnv(t *testing.T, c k8sContainer, pod, ns string) map[string]string {
	t.Helper()
	env := map[string]string{}
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for _, e := range c.Env {
		v := e.Value
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.name":
				v = pod
			case "metadata.namespace":
				v = ns
			default:
				t.Errorf("%s: fieldRef %s is not simulated by this test", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			v = "secret-" + e.ValueFrom.SecretKeyRef.Name + "-" + e.ValueFrom.SecretKeyRef.Key
		default:
			v = ref.ReplaceAllStringFunc(v, func(m string) string {
				if val, ok := env[ref.FindStringSubmatch(m)[1]]; ok {
					return val
				}
				return m
			})
		}
		env[e.Name] = v
	}
	return env
}

// TestKubernetesCluster checks deploy/kubernetes/cluster/servers.yaml: a
// StatefulSet whose every pod, given the environment Kubernetes would give
// it, loads a valid server configuration through the real loader with the
// pod's name as node_id, the same peers list (one per replica, at the
// stable names of the headless Service), its data_dir on a volume claim;
// a headless Service that publishes not-ready pods (peers must reach each
// other before any is ready) and a ClusterIP Service for the agents; pods
// started in parallel; a PodDisruptionBudget of one; probes on paths
// mutexd serves that do not kill a server that is not ready; resources,
// memory settings and security as in the standalone example. And the app
// manifest's agent names that ClusterIP Service.
func TestKubernetesCluster(t *testing.T) {
	objs := readKubernetes(t, serversManifest)
	var sts *k8sObject
	var pdbs, headless, balanced []k8sObject
	for i, o := range objs {
		switch {
		case o.Kind == "StatefulSet":
			if sts != nil {
				t.Fatal("servers.yaml has two StatefulSets")
			}
			sts = &objs[i]
		case o.Kind == "PodDisruptionBudget":
			pdbs = append(pdbs, o)
		case o.Kind == "Service" && o.Spec.ClusterIP == "None":
			headless = append(headless, o)
		case o.Kind == "Service":
			balanced = append(balanced, o)
		}
	}
	if sts == nil || len(pdbs) != 1 || len(headless) != 1 || len(balanced) != 1 {
		t.Fatalf("servers.yaml: want one StatefulSet (got %v), one PodDisruptionBudget (%d), one headless Service (%d) and one ClusterIP Service (%d)",
			sts != nil, len(pdbs), len(headless), len(balanced))
	}
	ps := sts.Spec.Template.Spec
	labels := sts.Spec.Template.Metadata.Labels
	selects := func(what string, sel yaml.Node, key string) {
		t.Helper()
		var m map[string]any
		if err := sel.Decode(&m); err != nil {
			t.Fatalf("%s selector: %v", what, err)
		}
		if key != "" {
			inner, _ := m[key].(map[string]any)
			m = inner
		}
		if len(m) == 0 {
			t.Errorf("%s selects nothing", what)
		}
		for k, v := range m {
			if labels[k] != v {
				t.Errorf("%s selects %s=%v, which the server pods do not carry", what, k, v)
			}
		}
	}
	selects("StatefulSet "+sts.Metadata.Name, sts.Spec.Selector, "matchLabels")

	// The server container.
	var m k8sContainer
	for _, c := range ps.Containers {
		if strings.HasPrefix(c.Image, "mutexd:") {
			m = c
		}
	}
	if m.Name == "" {
		t.Fatal("the StatefulSet has no mutexd container")
	}
	ports := map[string]int{}
	for _, p := range m.Ports {
		ports[p.Name] = p.ContainerPort
	}

	// Every pod's configuration, as the daemon will load it.
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas < 1 {
		t.Fatal("the StatefulSet sets no replicas")
	}
	replicas := *sts.Spec.Replicas
	const ns = "lockspace"
	var peers []config.Peer
	var cfg config.Config
	for i := range replicas {
		pod := fmt.Sprintf("%s-%d", sts.Metadata.Name, i)
		c, err := loadMutexdConfig(t, podEnv(t, m, pod, ns), "")
		if err != nil {
			t.Fatalf("pod %s: its environment does not load: %v", pod, err)
		}
		cfg = c
		if c.Cluster.NodeID != pod {
			t.Errorf("pod %s: cluster.node_id %q, want the pod's name", pod, c.Cluster.NodeID)
		}
		if peers == nil {
			peers = c.Cluster.Peers
		} else if !slices.Equal(peers, c.Cluster.Peers) {
			t.Errorf("pod %s: cluster.peers differ from pod %s-0's; every server needs the same list", pod, sts.Metadata.Name)
		}
	}
	apiPort, raftPort := portOf(t, cfg.Listen), portOf(t, cfg.Cluster.RaftListen)
	if strconv.Itoa(ports["mutexd"]) != apiPort || strconv.Itoa(ports["raft"]) != raftPort {
		t.Errorf("container ports %v, want mutexd %s and raft %s (what it listens on)", ports, apiPort, raftPort)
	}
	if len(peers) != replicas {
		t.Errorf("cluster.peers lists %d servers, the StatefulSet runs %d replicas", len(peers), replicas)
	}
	hs := headless[0].Metadata.Name
	for i, p := range peers {
		id := fmt.Sprintf("%s-%d", sts.Metadata.Name, i)
		// A StatefulSet pod's stable name: <pod>.<headless Service>.<namespace>.svc[.<cluster domain>].
		stable := regexp.MustCompile(`^` + regexp.QuoteMeta(id+"."+hs+"."+ns) + `\.svc(\.[a-z0-9.-]+)?$`)
		if p.ID != id {
			t.Errorf("peer %d: id %q, want %q (the pod's name)", i, p.ID, id)
		}
		if h, port, _ := net.SplitHostPort(p.Raft); !stable.MatchString(h) || port != raftPort {
			t.Errorf("peer %s: raft %s, want %s.%s.<namespace>.svc...:%s (its stable name in the headless Service)", p.ID, p.Raft, id, hs, raftPort)
		}
		if h, port := hostPort(t, p.API); !stable.MatchString(h) || port != apiPort {
			t.Errorf("peer %s: api %s, want http://%s.%s.<namespace>.svc...:%s", p.ID, p.API, id, hs, apiPort)
		}
	}
	claims := map[string]bool{}
	for _, v := range sts.Spec.VolumeClaimTemplates {
		claims[v.Metadata.Name] = true
	}
	onClaim := false
	for _, vm := range m.VolumeMounts {
		if cfg.Cluster.DataDir == vm.MountPath || strings.HasPrefix(cfg.Cluster.DataDir, strings.TrimSuffix(vm.MountPath, "/")+"/") {
			onClaim = claims[vm.Name]
		}
	}
	if !onClaim {
		t.Errorf("cluster.data_dir %s is not on a volumeClaimTemplate's volume: a rescheduled server would lose its Raft log", cfg.Cluster.DataDir)
	}
	if g := ps.SecurityContext.FSGroup; g == nil || *g == 0 {
		t.Error("pod securityContext sets no fsGroup: the data volume would not be writable by mutexd's non-root user")
	}

	// Helper variables are allowed only to be spelled into others.
	allowed := mutexdEnv(t)
	for _, e := range m.Env {
		if slices.Contains(allowed, e.Name) || slices.Contains(goRuntimeEnv, e.Name) {
			continue
		}
		if !slices.ContainsFunc(m.Env, func(o k8sEnv) bool { return strings.Contains(o.Value, "$("+e.Name+")") }) {
			t.Errorf("server container sets %s, which neither mutexd nor the Go runtime reads, nor another variable uses", e.Name)
		}
	}
	if !cfg.Auth.Enabled() || len(cfg.Auth.AdminTokens) == 0 {
		t.Errorf("servers listen on %s without tokens and an admin token from a Secret", cfg.Listen)
	}

	// The Services, the start order, the budget.
	if sts.Spec.ServiceName != hs {
		t.Errorf("StatefulSet serviceName %q, want the headless Service %q (the pods' stable names come from it)", sts.Spec.ServiceName, hs)
	}
	if !headless[0].Spec.PublishNotReadyAddresses {
		t.Errorf("headless Service %s must set publishNotReadyAddresses: servers become ready only once they elect a leader, which needs them to reach each other", hs)
	}
	if sts.Spec.PodManagementPolicy != "Parallel" {
		t.Errorf("StatefulSet podManagementPolicy %q, want Parallel: with OrderedReady the second server waits for the first to be ready, which needs a quorum", sts.Spec.PodManagementPolicy)
	}
	for _, svc := range append(slices.Clone(headless), balanced...) {
		selects("Service "+svc.Metadata.Name, svc.Spec.Selector, "")
		for _, p := range svc.Spec.Ports {
			if tp, ok := p.TargetPort.(int); !ok || (tp != ports["mutexd"] && tp != ports["raft"]) {
				t.Errorf("Service %s targets port %v, which the server does not listen on", svc.Metadata.Name, p.TargetPort)
			}
		}
	}
	var hsPorts []int
	for _, p := range headless[0].Spec.Ports {
		hsPorts = append(hsPorts, p.Port)
	}
	if !slices.Contains(hsPorts, ports["raft"]) || !slices.Contains(hsPorts, ports["mutexd"]) {
		t.Errorf("headless Service %s ports %v, want the Raft and API ports %d and %d", hs, hsPorts, ports["raft"], ports["mutexd"])
	}
	pdb := pdbs[0]
	if mu, ok := pdb.Spec.MaxUnavailable.(int); !ok || mu != 1 || pdb.Spec.MinAvailable != nil {
		t.Errorf("PodDisruptionBudget %s: maxUnavailable %v, minAvailable %v; want maxUnavailable 1 alone", pdb.Metadata.Name, pdb.Spec.MaxUnavailable, pdb.Spec.MinAvailable)
	}
	selects("PodDisruptionBudget "+pdb.Metadata.Name, pdb.Spec.Selector, "matchLabels")

	// Probes: on paths mutexd serves; only readiness asks /readyz, and
	// liveness is patient, so a server without a leader or catching up is
	// taken out of the Service, never killed.
	paths := apiPaths(t)
	for _, pr := range []struct {
		name     string
		probe    *k8sProbe
		path     string
		patience int // seconds of failures it must allow, at least
	}{
		{"startupProbe", m.StartupProbe, "/healthz", 60},
		{"livenessProbe", m.LivenessProbe, "/healthz", 30},
		{"readinessProbe", m.ReadinessProbe, "/readyz", 0},
	} {
		if pr.probe == nil || pr.probe.HTTPGet == nil {
			t.Errorf("server container has no %s httpGet", pr.name)
			continue
		}
		g := pr.probe.HTTPGet
		if !slices.Contains(paths, g.Path) {
			t.Errorf("%s GET %s: mutexd serves no such path (%v)", pr.name, g.Path, paths)
		}
		if g.Path != pr.path {
			t.Errorf("%s GET %s, want %s", pr.name, g.Path, pr.path)
		}
		if port := toString(g.Port); port != "mutexd" && port != apiPort {
			t.Errorf("%s on port %v, want mutexd's API port %s", pr.name, g.Port, apiPort)
		}
		period, failures := orDefault(pr.probe.PeriodSeconds, 10), orDefault(pr.probe.FailureThreshold, 3)
		if period*failures < pr.patience {
			t.Errorf("%s allows %d s of failures (%d × %d s), want at least %d s", pr.name, period*failures, failures, period, pr.patience)
		}
	}

	// Resources, memory and security, as the standalone example.
	for _, r := range []string{"cpu", "memory"} {
		if m.Resources.Requests[r] == "" {
			t.Errorf("server container requests no %s", r)
		}
	}
	checkContainerMemory(t, m)
	sc := ps.SecurityContext
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
		t.Errorf("pod securityContext must set runAsNonRoot: true and a non-zero runAsUser")
	}
	if c := m.SecurityContext; c == nil || c.ReadOnlyRootFilesystem == nil || !*c.ReadOnlyRootFilesystem ||
		c.AllowPrivilegeEscalation == nil || *c.AllowPrivilegeEscalation {
		t.Error("server container: want readOnlyRootFilesystem: true and allowPrivilegeEscalation: false")
	}
	ann := sts.Spec.Template.Metadata.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != apiPort || ann["prometheus.io/path"] != cfg.Metrics.Path {
		t.Errorf("pod annotations %v, want prometheus.io/scrape true, port %s, path %s", ann, apiPort, cfg.Metrics.Path)
	}

	// The app's agent forwards to the ClusterIP Service, with the servers'
	// Secret (so an app's token is good on both).
	app := readKubernetes(t, agentAppManifest)
	_, agent := appMutexd(t, agentAppManifest, app)
	svc := balanced[0]
	aenv := podEnv(t, agent, "demo-app-0", ns)
	if aenv["MUTEXD_CLUSTER_ROLE"] != "agent" {
		t.Errorf("app.yaml's sidecar: MUTEXD_CLUSTER_ROLE=%q, want agent", aenv["MUTEXD_CLUSTER_ROLE"])
	}
	list := strings.Split(aenv["MUTEXD_CLUSTER_SERVERS"], ",")
	for _, u := range list {
		h, port := hostPort(t, strings.TrimSpace(u))
		if first, _, _ := strings.Cut(h, "."); first != svc.Metadata.Name || port != strconv.Itoa(svc.Spec.Ports[0].Port) {
			t.Errorf("app.yaml's agent calls %q, want the servers' Service: http://%s[.<namespace>.svc]:%d", u, svc.Metadata.Name, svc.Spec.Ports[0].Port)
		}
	}
	serverEnv := podEnv(t, m, sts.Metadata.Name+"-0", ns)
	for _, name := range []string{"MUTEXD_AUTH_TOKENS", "MUTEXD_AUTH_ADMIN_TOKENS"} {
		if aenv[name] != serverEnv[name] || !strings.HasPrefix(aenv[name], "secret-") {
			t.Errorf("app.yaml's agent takes %s from %q, the servers from %q: want the servers' Secret", name, aenv[name], serverEnv[name])
		}
	}

	// Last, as it fails until the agent role is in the configuration.
	requireAgentRole(t)
	if _, err := loadMutexdConfig(t, aenv, ""); err != nil {
		t.Errorf("app.yaml's agent: its environment does not load: %v", err)
	}
}

// orDefault is v, or def when v is 0 (Kubernetes' default for an unset
// field).
func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}
