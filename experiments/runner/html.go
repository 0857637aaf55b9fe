package runner

import (
	"bytes"
	"fmt"
	"html/template"
	"math"
	"strings"
	"time"
)

// Colours of the timeline, also what the tests look for on the rendered
// page.
const (
	colourOK      = "#2e9e44"
	colourFail    = "#d64545"
	colourUnknown = "#e8a33c"
	colourP50     = "#3b6fd6"
	colourP99     = "#8e44ad"
	colourFault   = "#f6d0d0"
)

// HTML renders the run as one self-contained page (no script, no network):
// per workload a timeline of operations per second by outcome and their
// latency p50 and p99, with the fault windows shaded and labelled, the
// method's steps marked and the recovery drawn; then the checks and the
// fault windows. It is fit for a post-mortem.
func HTML(res *Result) ([]byte, error) {
	var charts []template.HTML
	for _, w := range res.Workloads {
		charts = append(charts, timelineSVG(res, w))
	}
	var b bytes.Buffer
	err := htmlPage.Execute(&b, map[string]any{
		"R": res, "Charts": charts, "Summary": runLine(res),
	})
	return b.Bytes(), err
}

// WriteHTML writes the HTML report.
func WriteHTML(path string, res *Result) error {
	data, err := HTML(res)
	if err != nil {
		return err
	}
	return writeFile(path, data)
}

const (
	chartW, chartH                     = 960, 240
	padL, padR, padT, padB             = 56, 64, 28, 30
	plotW, plotH                       = chartW - padL - padR, chartH - padT - padB
	chartFont                          = `font-family="system-ui,sans-serif" font-size="11"`
	secondsLabel, opsLabel, latencyLbl = "seconds", "ops/s", "latency ms"
)

// timelineSVG draws one workload's seconds.
func timelineSVG(res *Result, w WorkloadTimeline) template.HTML {
	n := max(len(w.Seconds), 1)
	maxOps, maxLat := 1, 1.0
	for _, s := range w.Seconds {
		maxOps = max(maxOps, s.OK+s.Fail+s.Unknown)
		maxLat = math.Max(maxLat, s.P99MS)
	}
	x := func(sec float64) float64 { return padL + sec*plotW/float64(n) }
	xt := func(t time.Time) float64 { return x(math.Max(0, t.Sub(res.Started).Seconds())) }
	yOps := func(v int) float64 { return padT + plotH - float64(v)*plotH/float64(maxOps) }
	yLat := func(v float64) float64 { return padT + plotH - v*plotH/maxLat }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="%s: operations per second and latency">`,
		chartW, chartH, chartW, chartH, template.HTMLEscapeString(w.Name))
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="#fafafa" stroke="#ccc"/>`, padL, padT, plotW, plotH)
	for _, fw := range res.FaultWindows {
		x0, x1 := xt(fw.Start), xt(fw.End)
		fmt.Fprintf(&b, `<rect class="fault-window" x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"><title>fault %s: fired %d</title></rect>`,
			x0, padT, math.Max(x1-x0, 1), plotH, colourFault, esc(fw.Rule), fw.Fired)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" %s fill="#a33">%s</text>`, x0+2, padT-6, chartFont, esc(fw.Rule))
	}
	bw := math.Max(plotW/float64(n)*0.8, 1)
	for _, s := range w.Seconds {
		base := 0
		for _, part := range []struct {
			v      int
			class  string
			colour string
		}{{s.OK, "ops-ok", colourOK}, {s.Fail, "ops-fail", colourFail}, {s.Unknown, "ops-unknown", colourUnknown}} {
			if part.v == 0 {
				continue
			}
			y0, y1 := yOps(base+part.v), yOps(base)
			fmt.Fprintf(&b, `<rect class="%s" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>second %d: %d %s</title></rect>`,
				part.class, x(float64(s.Second))+bw*0.125, y0, bw, y1-y0, part.colour, s.Second, part.v, strings.TrimPrefix(part.class, "ops-"))
			base += part.v
		}
	}
	for _, line := range []struct {
		class, colour string
		at            func(SecondLatency) float64
	}{{"lat-p50", colourP50, func(s SecondLatency) float64 { return s.P50MS }}, {"lat-p99", colourP99, func(s SecondLatency) float64 { return s.P99MS }}} {
		var pts []string
		for _, s := range w.Seconds {
			if s.OK+s.Fail+s.Unknown == 0 {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(float64(s.Second)+0.5), yLat(line.at(s))))
		}
		if len(pts) > 0 {
			fmt.Fprintf(&b, `<polyline class="%s" points="%s" fill="none" stroke="%s" stroke-width="2"/>`, line.class, strings.Join(pts, " "), line.colour)
		}
	}
	labelAt := math.Inf(-1)
	for _, st := range res.Steps {
		if st.Phase != "method" {
			continue
		}
		xs := xt(st.Start)
		fmt.Fprintf(&b, `<line class="step" x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#555" stroke-dasharray="3,3"><title>step %s (%s)</title></line>`,
			xs, padT, xs, padT+plotH, esc(st.Name), esc(st.Kind))
		// Steps at the same moment get their labels side by side.
		lx := math.Max(xs-3, labelAt+12)
		labelAt = lx
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" %s fill="#555" transform="rotate(-90 %.1f %d)">%s</text>`, lx, padT+plotH-4, chartFont, lx, padT+plotH-4, esc(st.Name))
	}
	if res.Recovered && !res.MethodEnd.IsZero() {
		xr := xt(res.MethodEnd.Add(res.RecoveryTime))
		fmt.Fprintf(&b, `<line class="recovered" x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="2"><title>steady state again after %s</title></line>`,
			xr, padT, xr, padT+plotH, colourOK, res.RecoveryTime.Round(time.Millisecond))
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" %s fill="%s">recovered</text>`, xr+3, padT+12, chartFont, colourOK)
	}
	// Axes: seconds below, ops/s left, latency right.
	step := max(1, n/10)
	for s := 0; s <= n; s += step {
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" %s text-anchor="middle" fill="#333">%d</text>`, x(float64(s)), chartH-12, chartFont, s)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" %s fill="#333">%s</text>`, padL+plotW-40, chartH-1, chartFont, secondsLabel)
	fmt.Fprintf(&b, `<text x="%d" y="%d" %s text-anchor="end" fill="#333">%d</text><text x="%d" y="%d" %s text-anchor="end" fill="#333">0</text>`,
		padL-4, padT+10, chartFont, maxOps, padL-4, padT+plotH, chartFont)
	fmt.Fprintf(&b, `<text x="4" y="%d" %s fill="#333">%s</text>`, padT-6, chartFont, opsLabel)
	fmt.Fprintf(&b, `<text x="%d" y="%d" %s fill="%s">%.0f</text><text x="%d" y="%d" %s fill="%s">%s</text>`,
		padL+plotW+4, padT+10, chartFont, colourP99, maxLat, padL+plotW+4, padT-6, chartFont, colourP99, latencyLbl)
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func esc(s string) string { return template.HTMLEscapeString(s) }

var htmlPage = template.Must(template.New("report").Funcs(template.FuncMap{
	"passFail": func(ok bool) string {
		if ok {
			return "pass"
		}
		return "FAIL"
	},
	"at":   func(r *Result, t time.Time) string { return t.Sub(r.Started).Round(100 * time.Millisecond).String() },
	"took": func(from, to time.Time) string { return to.Sub(from).Round(time.Millisecond).String() },
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>pgchaos: {{.R.Experiment}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}
.pass{color:#2e7d32}.FAIL{color:#c62828;font-weight:bold}
.legend span{display:inline-block;margin-right:1.2em}
.legend i{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:middle}
</style></head><body>
<h1>pgchaos: {{.R.Experiment}} — {{if .R.Interrupted}}interrupted{{else if .R.Pass}}passed{{else}}failed{{end}}</h1>
{{if .R.Problem}}<p><strong>{{.R.Phase}}:</strong> {{.R.Problem}}</p>{{end}}
<p>{{.Summary}}</p>
<p>File {{.R.Source}}.</p>
{{range $i, $w := .R.Workloads}}<h2>Workload {{$w.Name}}</h2>
{{index $.Charts $i}}
{{end}}
{{if .R.Workloads}}<p class="legend"><span><i style="background:` + colourOK + `"></i>ok</span><span><i style="background:` + colourFail + `"></i>failed</span><span><i style="background:` + colourUnknown + `"></i>unknown</span><span><i style="background:` + colourP50 + `"></i>latency p50</span><span><i style="background:` + colourP99 + `"></i>latency p99</span><span><i style="background:` + colourFault + `"></i>fault in place</span><span>dashed: method steps</span></p>{{end}}
<h2>Checks</h2>
<table><tr><th>check</th><th>result</th><th>evidence</th></tr>
{{range .R.Probes}}<tr><td>steady state ({{.Phase}}): {{.Name}}</td><td class="{{passFail .Pass}}">{{passFail .Pass}}</td><td>value {{.Value}} {{.Error}}</td></tr>
{{end}}{{range .R.Verdicts}}<tr><td>{{.Name}}</td><td class="{{passFail .Pass}}">{{passFail .Pass}}</td><td>{{.Summary}}</td></tr>
{{end}}{{range .R.Rollbacks}}<tr><td>rollback: {{.Name}}</td><td class="{{passFail (eq .Error "")}}">{{passFail (eq .Error "")}}</td><td>{{.Error}}</td></tr>
{{end}}</table>
{{if .R.Steps}}<h2>Steps</h2>
<table><tr><th>phase</th><th>step</th><th>at</th><th>took</th><th>result</th></tr>
{{range .R.Steps}}<tr><td>{{.Phase}}</td><td>{{.Name}}</td><td>{{at $.R .Start}}</td><td>{{took .Start .End}}</td><td>{{if .Error}}<span class="FAIL">FAIL</span>: {{.Error}}{{else}}ok{{end}}</td></tr>
{{end}}</table>{{end}}
{{if .R.FaultWindows}}<h2>Faults</h2>
<table><tr><th>rule</th><th>from</th><th>to</th><th>fired</th></tr>
{{range .R.FaultWindows}}<tr><td>{{.Rule}}</td><td>{{at $.R .Start}}</td><td>{{at $.R .End}}</td><td>{{.FiredText}}</td></tr>
{{end}}</table>{{end}}
</body></html>
`))
