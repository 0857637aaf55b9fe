// Package release holds the release build script, build.sh, and its tests.
package release

import (
	"archive/tar"
	"compress/gzip"
	"debug/elf"
	"debug/macho"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func command(t *testing.T, dir string, env []string, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func must(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	out, err := command(t, dir, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(out)
}

// The script builds this machine's archive and a macOS one (the check that
// macOS still compiles), checksums that verify, and a static binary whose
// version is the stamped one.
func TestBuild(t *testing.T) {
	out := t.TempDir()
	start := time.Now()
	log := must(t, ".", []string{"TARGETS=host darwin/arm64", "OUT=" + out}, "bash", "build.sh", "v0.0.1-test.1")
	t.Logf("build.sh in %s:\n%s", time.Since(start).Round(time.Second), log)

	host := "pgchaos_0.0.1-test.1_" + runtime.GOOS + "_" + runtime.GOARCH
	darwin := "pgchaos_0.0.1-test.1_darwin_arm64"
	sums, err := os.ReadFile(filepath.Join(out, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			listed = append(listed, f[1])
		}
	}
	if want := []string{host + ".tar.gz", darwin + ".tar.gz"}; !slices.Equal(slices.Sorted(slices.Values(listed)), slices.Sorted(slices.Values(want))) {
		t.Fatalf("SHA256SUMS lists %q, want %q", listed, want)
	}
	if res := must(t, out, nil, "sha256sum", "-c", "SHA256SUMS"); strings.Count(res, ": OK") != 2 {
		t.Fatalf("sha256sum -c:\n%s", res)
	}

	dir := t.TempDir()
	if files, want := untar(t, filepath.Join(out, host+".tar.gz"), dir), []string{"CHANGELOG.md", "LICENSE", "NOTICE", "README.md", "pgchaos"}; !slices.Equal(files, want) {
		t.Errorf("the archive holds %q, want %q", files, want)
	}
	bin := filepath.Join(dir, "pgchaos")
	if runtime.GOOS == "linux" {
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Error("the linux binary is dynamically linked (it has an ELF interpreter)")
			}
		}
		f.Close()
	}

	// The stamped version, the checkout's commit and commit time, the Go
	// that built it.
	var info struct {
		Version, Commit, Date string
		GoVersion             string `json:"go_version"`
	}
	if err := json.Unmarshal([]byte(must(t, dir, nil, bin, "version", "--json")), &info); err != nil {
		t.Fatal(err)
	}
	commit := must(t, ".", nil, "git", "rev-parse", "HEAD")
	if _, err := command(t, ".", nil, "git", "diff", "--quiet", "HEAD", "--"); err != nil {
		commit += "+dirty"
	}
	epoch, _ := strconv.ParseInt(must(t, ".", nil, "git", "log", "-1", "--format=%ct", "HEAD"), 10, 64)
	want := time.Unix(epoch, 0).UTC().Format(time.RFC3339)
	if info.Version != "v0.0.1-test.1" || info.Commit != commit || info.Date != want || info.GoVersion != must(t, ".", nil, "go", "env", "GOVERSION") {
		t.Errorf("pgchaos version --json: %+v; want v0.0.1-test.1, %s, %s", info, commit, want)
	}
	if text := must(t, dir, nil, bin, "version"); !strings.HasPrefix(text, "pgchaos v0.0.1-test.1\ncommit:  "+commit+"\n") {
		t.Errorf("pgchaos version:\n%s", text)
	}

	// The macOS archive holds an arm64 Mach-O binary.
	mdir := t.TempDir()
	untar(t, filepath.Join(out, darwin+".tar.gz"), mdir)
	m, err := macho.Open(filepath.Join(mdir, "pgchaos"))
	if err != nil {
		t.Fatalf("the darwin archive's pgchaos: %v", err)
	}
	defer m.Close()
	if m.Cpu != macho.CpuArm64 {
		t.Errorf("the darwin/arm64 binary is for %v", m.Cpu)
	}
}

// The version comes from the argument, else $VERSION, else the v* tag
// git describe finds; without any, the script says what to do.
func TestVersionFromTag(t *testing.T) {
	repo := t.TempDir()
	script, err := os.ReadFile("build.sh")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(repo, "release"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "release", "build.sh"), script, 0o755); err != nil {
		t.Fatal(err)
	}
	gitEnv := []string{"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com", "GIT_CONFIG_NOSYSTEM=1", "HOME=" + repo}
	git := func(args ...string) string { return must(t, repo, gitEnv, "git", args...) }
	version := func(env []string, args ...string) (string, error) {
		out, err := command(t, repo, append(gitEnv, env...), "bash", append([]string{"release/build.sh", "--print-version"}, args...)...)
		return strings.TrimSpace(out), err
	}
	git("init", "-q")
	git("add", ".")
	git("commit", "-qm", "first")
	if out, err := version(nil); err == nil || !strings.Contains(out, "no v* tag") {
		t.Errorf("no tag, no version: %v %q", err, out)
	}
	git("tag", "-a", "v1.2.3", "-m", "v1.2.3")
	git("tag", "not-a-release")
	for _, c := range []struct {
		env  []string
		args []string
		want string
	}{
		{nil, nil, "v1.2.3"},
		{[]string{"VERSION=v2.0.0-rc.1"}, nil, "v2.0.0-rc.1"},
		{[]string{"VERSION=v2.0.0-rc.1"}, []string{"v2.0.0"}, "v2.0.0"},
	} {
		if got, err := version(c.env, c.args...); err != nil || got != c.want {
			t.Errorf("%v %v: %q %v, want %s", c.env, c.args, got, err, c.want)
		}
	}
	if err := os.WriteFile(filepath.Join(repo, "file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	git("add", "file")
	git("commit", "-qm", "second")
	head := git("rev-parse", "--short", "HEAD")
	if got, _ := version(nil); got != "v1.2.3-1-g"+head {
		t.Errorf("a commit past the tag: %q, want v1.2.3-1-g%s", got, head)
	}
	if err := os.WriteFile(filepath.Join(repo, "file"), []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, _ := version(nil); got != "v1.2.3-1-g"+head+"-dirty" {
		t.Errorf("a modified tree: %q, want v1.2.3-1-g%s-dirty", got, head)
	}
	if out, err := version(nil, "1.2"); err == nil || !strings.Contains(out, "want vMAJOR.MINOR.PATCH") {
		t.Errorf("version 1.2: %v %q", err, out)
	}
}

// untar extracts the archive's regular files into dir and returns their names, sorted.
func untar(t *testing.T, archive, dir string) []string {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg || strings.Contains(h.Name, "/") {
			t.Fatalf("%s: unexpected entry %q", archive, h.Name)
		}
		w, err := os.OpenFile(filepath.Join(dir, h.Name), os.O_CREATE|os.O_WRONLY, os.FileMode(h.Mode))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(w, tr); err != nil {
			t.Fatal(err)
		}
		w.Close()
		names = append(names, h.Name)
	}
	slices.Sort(names)
	return names
}
