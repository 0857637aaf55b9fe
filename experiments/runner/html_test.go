package runner_test

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgchaos/pgchaos/experiments/runner"
)

// The HTML report of a run with a fault, rendered by a real headless
// browser: the timeline is drawn — ok and failed operations, the fault's
// window shaded — not only written.
func TestHTMLReportRenders(t *testing.T) {
	browser, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("chromium is needed to render the HTML report (apt-get install chromium): %v", err)
		}
		t.Skipf("chromium not installed: %v", err)
	}
	dsn := newDB(t)
	res := runFile(t, `name: html
target: {dsn: "${var:dsn}"}
proxies: [{name: pg, upstream: target}]
workloads:
  - {name: reads, type: sql, clients: 2, rate: 40, statements: ["SELECT 1"]}
method:
  - {name: wait, wait: 1500ms}
  - name: refuse
    inject: {rule: {name: refuse-reads, match: {sql: "SELECT 1"}, action: {type: error, sqlstate: "40001"}, limits: {probability: 0.5}}, duration: 2s}
  - {name: after, wait: 3s}
`, map[string]string{"dsn": dsn})
	wantPass(t, res)
	if len(res.Workloads) != 1 || res.Workloads[0].Name != "reads" {
		t.Fatalf("workload timelines %+v", res.Workloads)
	}
	failed := 0
	for _, s := range res.Workloads[0].Seconds {
		failed += s.Fail
		if s.OK+s.Fail > 0 && (s.P50MS <= 0 || s.P99MS < s.P50MS) {
			t.Errorf("second %+v: want its latency percentiles", s)
		}
	}
	if failed == 0 {
		t.Fatal("the timeline has no failed operations: the fault did not reach the workload")
	}
	dir := t.TempDir()
	page := filepath.Join(dir, "report.html")
	if err := runner.WriteHTML(page, res); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(page)
	for _, want := range []string{`class="fault-window"`, `class="ops-ok"`, `class="ops-fail"`, `class="lat-p99"`, `class="step"`, "refuse-reads", "Checks"} {
		if !bytes.Contains(data, []byte(want)) {
			t.Errorf("report.html lacks %s", want)
		}
	}
	if bytes.Contains(data, []byte("<script")) || bytes.Contains(data, []byte("http://")) && !bytes.Contains(data, []byte(`xmlns="http://www.w3.org/2000/svg"`)) {
		t.Error("report.html is not self-contained")
	}

	shot := filepath.Join(dir, "shot.png")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
		"--window-size=1100,900", "--screenshot="+shot, "file://"+page)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	// Count the pixels of each colour the chart draws with.
	counts := map[string]int{}
	colours := map[string][3]uint8{"ok": {0x2e, 0x9e, 0x44}, "failed": {0xd6, 0x45, 0x45}, "fault window": {0xf6, 0xd0, 0xd0}}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			for name, c := range colours {
				if near(img, x, y, c) {
					counts[name]++
				}
			}
		}
	}
	for name := range colours {
		// The legend alone has about 150 pixels of each.
		if counts[name] < 400 {
			t.Errorf("the rendered page has %d pixels of the %s colour: want the chart to draw it (all: %v)", counts[name], name, counts)
		}
	}
	t.Logf("pixels by colour: %v", counts)
}

func near(img image.Image, x, y int, c [3]uint8) bool {
	r, g, b, _ := img.At(x, y).RGBA()
	d := func(a uint32, want uint8) int {
		v := int(a>>8) - int(want)
		if v < 0 {
			return -v
		}
		return v
	}
	return d(r, c[0])+d(g, c[1])+d(b, c[2]) < 24
}
