package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// ignoreRule is one .dockerignore line.
type ignoreRule struct {
	re      *regexp.Regexp
	include bool // a "!" line
}

// readDockerignore parses the repository's .dockerignore.
func readDockerignore(t *testing.T) []ignoreRule {
	t.Helper()
	var rules []ignoreRule
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, ".dockerignore")))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r := ignoreRule{}
		if rest, ok := strings.CutPrefix(line, "!"); ok {
			r.include, line = true, rest
		}
		r.re = globRegexp(path.Clean(strings.TrimPrefix(line, "/")))
		rules = append(rules, r)
	}
	return rules
}

// globRegexp compiles a .dockerignore pattern: filepath.Match syntax where
// * and ? stop at slashes, plus ** for any number of directories.
func globRegexp(p string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(p); i++ {
		switch {
		case strings.HasPrefix(p[i:], "**/"):
			b.WriteString("(.*/)?")
			i += 2
		case strings.HasPrefix(p[i:], "**"):
			b.WriteString(".*")
			i++
		case p[i] == '*':
			b.WriteString("[^/]*")
		case p[i] == '?':
			b.WriteString("[^/]")
		default:
			b.WriteString(regexp.QuoteMeta(p[i : i+1]))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// inContext reports whether Docker sends rel (a slash path from the
// repository root) in the build context: the last rule matching the path
// or one of its parent directories decides.
func inContext(rules []ignoreRule, rel string) bool {
	in := true
	for _, r := range rules {
		for p := rel; p != "."; p = path.Dir(p) {
			if r.re.MatchString(p) {
				in = r.include
				break
			}
		}
	}
	return in
}

// buildContext copies the files Docker would send as the build context
// (the repository's files, tracked or not, minus .dockerignore) from root
// into dst.
func buildContext(root string, rules []ignoreRule, dst string) error {
	files, err := repoFiles(root)
	if err != nil {
		return err
	}
	for _, rel := range files {
		if !inContext(rules, rel) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted in the work tree
		} else if err != nil {
			return err
		}
		to := filepath.Join(dst, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(to, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// repoFiles lists the repository's files as slash paths: from git (tracked
// and untracked, not ignored) in a checkout, else by walking the tree.
func repoFiles(root string) ([]string, error) {
	if out, err := exec.Command("git", "-C", root, "ls-files", "--cached", "--others", "--exclude-standard").Output(); err == nil {
		return strings.Split(strings.TrimSpace(string(out)), "\n"), nil
	}
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	return files, err
}

func TestDockerignore(t *testing.T) {
	rules := readDockerignore(t)
	for _, tc := range []struct {
		path string
		want bool
	}{
		{"go.mod", true},
		{"cmd/mutexd/main.go", true},
		{"internal/engine/engine.go", true},
		{"internal/engine/engine_test.go", false},
		{"client/client.go", true},
		{"deploy/demo/main.go", true},
		{"deploy/grafana/mutexd.json", false},
		{"README.md", false},
		{".git/config", false},
		{"Dockerfile", false},
	} {
		if got := inContext(rules, tc.path); got != tc.want {
			t.Errorf("%s in the build context: %v, want %v", tc.path, got, tc.want)
		}
	}
}
