package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSecurityDocs runs every command of docs/security.md in order.
func TestSecurityDocs(t *testing.T) {
	runDocCommandsRetrying(t, "../../docs/security.md")
}

// TestFaultsDocs runs every command of docs/faults.md in order: each
// recipe's rule is one the server takes.
func TestFaultsDocs(t *testing.T) {
	runDocCommandsRetrying(t, "../../docs/faults.md")
}

// TestDRDocs runs every command of docs/dr.md in order: the drills it
// shows, and the runbook drill it has the reader write.
func TestDRDocs(t *testing.T) {
	if err := runDocCommands(t, "../../docs/dr.md"); err != nil {
		t.Fatal(err)
	}
}

// TestMetricsDocs runs every command of docs/metrics.md in order: a
// fault window opened and closed, as its metrics show it.
func TestMetricsDocs(t *testing.T) {
	runDocCommandsRetrying(t, "../../docs/metrics.md")
}

// TestProxyDocs runs every command of docs/proxy.md in order: a proxy
// from flags, an embedded one, one from a file, and the sessions API.
func TestProxyDocs(t *testing.T) {
	runDocCommandsRetrying(t, "../../docs/proxy.md")
}

// TestInstallDocs runs every command of docs/install.md in order: version
// and the completion scripts installed where each shell looks (what needs
// the network, go install and the download, is in plain blocks).
func TestInstallDocs(t *testing.T) {
	if err := runDocCommands(t, "../../docs/install.md"); err != nil {
		t.Fatal(err)
	}
}

// TestExperimentsDocs runs every command of docs/experiments.md in order:
// the first experiment, validated and run as written.
func TestExperimentsDocs(t *testing.T) {
	if err := runDocCommands(t, "../../docs/experiments.md"); err != nil {
		t.Fatal(err)
	}
}

// TestToxiproxyDocs runs every command of docs/toxiproxy.md in order:
// pgchaos started as toxiproxy-server, driven by toxiproxy-cli and curl,
// and the command testcontainers-go's module runs.
func TestToxiproxyDocs(t *testing.T) {
	runDocCommandsRetrying(t, "../../docs/toxiproxy.md")
}

// TestExploreDocs runs every command of docs/explore.md in order: the
// application explored, broken and fixed twice, with what each run finds.
func TestExploreDocs(t *testing.T) {
	if err := runDocCommands(t, "../../docs/explore.md"); err != nil {
		t.Fatal(err)
	}
}

// isToxiproxyServerLine reports whether a docs command starts pgchaos as
// toxiproxy-server: no arguments, or toxiproxy-server's flags.
func isToxiproxyServerLine(line string) bool {
	f := strings.Fields(strings.TrimSuffix(line, " &"))
	return len(f) > 0 && f[0] == "pgchaos" && isToxiproxyServerArgs(f[1:])
}

// installToxiproxyCLI puts toxiproxy-cli in dir: the one on PATH, or
// toxiproxy's own, of the version go.mod requires, built with go install.
func installToxiproxyCLI(t *testing.T, dir string) {
	t.Helper()
	path, err := exec.LookPath("toxiproxy-cli")
	if err != nil {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "github.com/Shopify/toxiproxy/v2").Output()
		if err != nil {
			t.Fatalf("the version of toxiproxy in go.mod: %v", err)
		}
		pkg := "github.com/Shopify/toxiproxy/v2/cmd/cli@" + strings.TrimSpace(string(out))
		gobin := t.TempDir()
		cmd := exec.Command("go", "install", pkg)
		cmd.Env = append(os.Environ(), "GOBIN="+gobin, "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("toxiproxy-cli runs the commands of docs/toxiproxy.md: not on PATH, and go install %s: %v\n%s", pkg, err, out)
		}
		path = filepath.Join(gobin, "cli")
	}
	if err := os.Symlink(path, filepath.Join(dir, "toxiproxy-cli")); err != nil {
		t.Fatal(err)
	}
}

// runDocCommandsRetrying runs a page's commands, again on other ports (up
// to three times in all) when a port they were given was taken meanwhile.
func runDocCommandsRetrying(t *testing.T, path string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		err := runDocCommands(t, path)
		if err == nil {
			return
		}
		if attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("%v: running the commands again on other ports", err)
	}
}

// errPortLost: a port the docs' commands were given was taken by another
// process before pgchaos could bind it.
var errPortLost = errors.New("a free port was taken by another process")

// docPorts are the ports the docs use; the test runs on free ones instead
// (5432 is the test's PostgreSQL).
var docPorts = []string{"8474", "6543", "6544", "6432", "9187", "8666"}

var (
	docBlockRE   = regexp.MustCompile("(?ms)^```([a-z]*)\n(.*?)^```\n")
	expectExitRE = regexp.MustCompile(`#\s*exit (\d+)\s*$`)
)

// runDocCommands runs the sh blocks of a Markdown file as a user would, in
// a scratch directory with the pgchaos binary on PATH, on free ports
// instead of the docs' (also where a command relies on the default API
// address): a `pgchaos proxy`
// runs in the background (replacing the one before) until the API
// listens; every other command must exit 0, or with the status a trailing
// "# exit N" names. A plain block right after such a failing command is
// the error it must print. A yaml block whose first line is "# NAME" is
// written to the file NAME. It returns errPortLost when a proxy could not
// bind a port it was given; any other problem fails the test.
func runDocCommands(t *testing.T, path string) error {
	for _, tool := range []string{"sh", "curl", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s runs the commands of %s: %v (apt-get install -y %s)", tool, path, err, tool)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bin := buildBinary(t)
	if strings.Contains(string(data), "toxiproxy-cli ") {
		installToxiproxyCLI(t, filepath.Dir(bin))
	}
	work := t.TempDir()
	subst := []string{":5432", ":" + strconv.Itoa(pg.Port())}
	for _, p := range docPorts {
		port := strings.TrimPrefix(freeAddr(t), "127.0.0.1:")
		subst = append(subst, ":"+p, ":"+port)
	}
	replacer := strings.NewReplacer(subst...)
	defaultAPI := replacer.Replace("127.0.0.1:8474")
	env := []string{"PATH=" + filepath.Dir(bin) + string(os.PathListSeparator) + os.Getenv("PATH"), "HOME=" + work}

	var proxy *exec.Cmd
	stopProxy := func() {
		if proxy == nil {
			return
		}
		proxy.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- proxy.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("pgchaos proxy exited with %v after SIGTERM", err)
			}
		case <-time.After(15 * time.Second):
			proxy.Process.Kill()
			t.Errorf("pgchaos proxy still running 15s after SIGTERM")
		}
		proxy = nil
	}
	defer stopProxy()

	lastFailure := ""
	for _, m := range docBlockRE.FindAllStringSubmatch(string(data), -1) {
		lang, text := m[1], replacer.Replace(m[2])
		switch lang {
		case "yaml":
			first, _, _ := strings.Cut(text, "\n")
			if name, ok := strings.CutPrefix(first, "# "); ok && !strings.Contains(name, " ") {
				if err := os.WriteFile(filepath.Join(work, name), []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			continue
		case "":
			if lastFailure != "" && strings.TrimSpace(text) != lastFailure {
				t.Errorf("%s shows the error\n%s\nbut the command printed\n%s", path, strings.TrimSpace(text), lastFailure)
			}
			lastFailure = ""
			continue
		case "sh":
		default:
			continue
		}
		lastFailure = ""
		for _, line := range shellCommands(text) {
			server := strings.HasPrefix(line, "pgchaos proxy") || isToxiproxyServerLine(line)
			if bg, ok := strings.CutSuffix(line, " &"); ok && server {
				line = bg // proxies run in the background here anyway
			}
			line = withAPI(line, defaultAPI)
			if isToxiproxyServerLine(line) && !strings.Contains(line, "-port") {
				// toxiproxy-server's default port, as the docs' explicit
				// ones, is the test's free one.
				line += " -port=" + strings.TrimPrefix(defaultAPI, "127.0.0.1:")
			}
			want := 0
			if e := expectExitRE.FindStringSubmatch(line); e != nil {
				want, _ = strconv.Atoi(e[1])
			}
			if server && want == 0 {
				stopProxy()
				var err error
				if proxy, err = startDocProxy(t, work, env, line); err != nil {
					return err
				}
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			cmd := exec.CommandContext(ctx, "sh", "-c", line)
			cmd.Dir, cmd.Env = work, env
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			cancel()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			t.Logf("$ %s\n%s%s", line, stdout.String(), stderr.String())
			if code != want {
				t.Fatalf("%s: exit %d, want %d\n%s%s", line, code, want, stdout.String(), stderr.String())
			}
			if want != 0 {
				lastFailure = strings.TrimSpace(stderr.String())
			}
		}
	}
	return nil
}

var (
	pgchaosCmdRE = regexp.MustCompile(`\bpgchaos (proxy|fault \w+|sessions|events)\b`)
	shellOpRE    = regexp.MustCompile(`\s*(\||;|&&|>|<|#|\n)`)
)

// withAPI gives a pgchaos command that uses the default control API
// address (127.0.0.1:8474) the test's instead, as the docs' explicit ports
// are replaced. A --config file names its own. The flag goes before any
// redirection, so that a here-document's body stays as written.
func withAPI(line, api string) string {
	loc := pgchaosCmdRE.FindStringIndex(line)
	if loc == nil {
		return line
	}
	end := len(line)
	if op := shellOpRE.FindStringIndex(line[loc[1]:]); op != nil {
		end = loc[1] + op[0]
	}
	if cmd := line[loc[0]:end]; strings.Contains(cmd, "--api ") || strings.Contains(cmd, "--api=") || strings.Contains(cmd, "--config ") {
		return line
	}
	return line[:end] + " --api " + api + line[end:]
}

// heredocRE finds a here-document's delimiter: <<EOF, <<'EOF', <<-EOF.
var heredocRE = regexp.MustCompile(`<<-?\s*'?([A-Za-z_]+)'?`)

// shellCommands splits a sh block into its commands, joining continued
// lines and here-documents and skipping comments.
func shellCommands(block string) []string {
	var cmds []string
	cur := ""
	heredoc := "" // the delimiter of the here-document being read
	for _, line := range strings.Split(block, "\n") {
		if heredoc != "" {
			cur += "\n" + line
			if strings.TrimSpace(line) == heredoc {
				cmds = append(cmds, cur)
				cur, heredoc = "", ""
			}
			continue
		}
		if m := heredocRE.FindStringSubmatch(line); m != nil && !strings.HasPrefix(strings.TrimSpace(line), "#") {
			cur, heredoc = strings.TrimSpace(cur+line), m[1]
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur += strings.TrimSuffix(line, "\\")
			continue
		}
		line = strings.TrimSpace(cur + line)
		cur = ""
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cmds = append(cmds, line)
	}
	return cmds
}

// startDocProxy starts a `pgchaos proxy` command line of the docs and
// waits until its control API listens; errPortLost when it could not bind
// a port it was given.
func startDocProxy(t *testing.T, dir string, env []string, line string) (*exec.Cmd, error) {
	t.Helper()
	cmd := exec.Command("sh", "-c", "exec "+line)
	cmd.Dir, cmd.Env = dir, env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	listening := make(chan bool, 1)
	var log bytes.Buffer
	go func() {
		lines := bufio.NewScanner(stderr)
		for lines.Scan() {
			fmt.Fprintln(&log, lines.Text())
			if strings.Contains(lines.Text(), "control API listening") {
				listening <- true
				io.Copy(io.Discard, stderr)
				return
			}
		}
		listening <- false
	}()
	select {
	case ok := <-listening:
		if !ok {
			cmd.Wait()
			if strings.Contains(log.String(), "address already in use") {
				t.Logf("$ %s\n%s", line, log.String())
				return nil, errPortLost
			}
			t.Fatalf("$ %s\nended before its API listened:\n%s", line, log.String())
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("$ %s\nno API after 60s", line)
	}
	t.Logf("$ %s  (running)", line)
	return cmd, nil
}
