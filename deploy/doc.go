// Package deploy holds no code: it is the home of mutexd's deployment files
// (the Grafana dashboard, Prometheus configuration and alert rules, the
// Kubernetes examples, the compose cluster's configuration files) and of
// the tests that prove them against real programs: promtool, a real Prometheus scraping a real mutexd, the
// Dockerfile's own build commands, and the docker-compose and Kubernetes
// manifests checked against the files and settings mutexd really has.
package deploy
