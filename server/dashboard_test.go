package server_test

import (
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// dashboard is what the test reads of deploy/grafana/pgchaos.json.
type dashboard struct {
	SchemaVersion int `json:"schemaVersion"`
	Panels        []struct {
		ID         int             `json:"id"`
		Title      string          `json:"title"`
		Datasource json.RawMessage `json:"datasource"`
		Targets    []struct {
			Expr       string          `json:"expr"`
			Datasource json.RawMessage `json:"datasource"`
		} `json:"targets"`
	} `json:"panels"`
	Annotations struct {
		List []struct {
			Name       string          `json:"name"`
			BuiltIn    int             `json:"builtIn"`
			Expr       string          `json:"expr"`
			Datasource json.RawMessage `json:"datasource"`
		} `json:"list"`
	} `json:"annotations"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Query      any    `json:"query"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

const dashboardDS = `{"type":"prometheus","uid":"${datasource}"}`

// Every metric the Grafana dashboard queries, in its panels, its fault
// window annotations and its proxy variable, is on a real server's
// /metrics after some traffic and a fired rule: renaming a metric breaks
// this test, not the dashboard of whoever upgrades.
func TestGrafanaDashboardMetricsExist(t *testing.T) {
	data, err := os.ReadFile("../deploy/grafana/pgchaos.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("deploy/grafana/pgchaos.json: %v", err)
	}
	if d.SchemaVersion < 39 {
		t.Errorf("schemaVersion %d: want a current Grafana's (39 or later)", d.SchemaVersion)
	}
	sameDS := func(raw json.RawMessage) bool {
		var v any
		json.Unmarshal(raw, &v)
		b, _ := json.Marshal(v)
		return string(b) == dashboardDS
	}

	var exprs []string
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if !sameDS(p.Datasource) || len(p.Targets) == 0 {
			t.Errorf("panel %q: datasource %s and %d targets, want %s and some", p.Title, p.Datasource, len(p.Targets), dashboardDS)
		}
		for _, tg := range p.Targets {
			if !sameDS(tg.Datasource) || tg.Expr == "" {
				t.Errorf("panel %q: a target with datasource %s and expr %q", p.Title, tg.Datasource, tg.Expr)
			}
			exprs = append(exprs, tg.Expr)
		}
	}
	windows := false
	for _, a := range d.Annotations.List {
		if a.BuiltIn == 1 {
			continue
		}
		if !sameDS(a.Datasource) || a.Expr == "" {
			t.Errorf("annotation %q: datasource %s, expr %q", a.Name, a.Datasource, a.Expr)
		}
		windows = windows || strings.Contains(a.Expr, "pgchaos_rules_active")
		exprs = append(exprs, a.Expr)
	}
	if !windows {
		t.Error("no annotation shows fault windows (pgchaos_rules_active)")
	}
	var vars []string
	for _, v := range d.Templating.List {
		vars = append(vars, v.Name+":"+v.Type)
		if v.Type == "query" {
			exprs = append(exprs, v.Definition)
		}
	}
	if !slices.Contains(vars, "datasource:datasource") || !slices.Contains(vars, "proxy:query") {
		t.Errorf("template variables %v, want datasource:datasource and proxy:query", vars)
	}

	used := map[string]bool{}
	for _, e := range exprs {
		names := promqlMetricNames(e)
		if len(names) == 0 {
			t.Errorf("no metric in %q", e)
		}
		for _, n := range names {
			used[n] = true
		}
	}

	// Traffic and a fired rule, so that every series has something in it.
	_, api, ctx, conn := withSession(t)
	send(t, "POST", api+"/rules", `{"name": "slow", "match": {"sql": "dashboard"}, "action": {"type": "delay", "delay": "1ms"}}`, 201)
	mustExec(t, ctx, conn, "SELECT 'dashboard'")
	waitFired(t, api, "slow", 1)
	page := get(t, api+"/metrics", http.StatusOK, nil)
	families := map[string]string{} // name -> type
	for line := range strings.Lines(page) {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			families[f[2]] = f[3]
		}
	}
	for n := range used {
		family := n
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(n, suffix); ok && (families[base] == "histogram" || families[base] == "summary" && suffix != "_bucket") {
				family = base
			}
		}
		if families[family] == "" {
			t.Errorf("the dashboard queries %s, which /metrics does not have", n)
			continue
		}
		if !strings.Contains(page, "\n"+n+"{") && !strings.Contains(page, "\n"+n+" ") {
			t.Errorf("the dashboard queries %s: /metrics has the family but no series of it", n)
		}
	}
	t.Logf("the dashboard queries %d metrics", len(used))
}

var (
	promqlStringRE   = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	promqlMatchersRE = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	promqlGroupingRE = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promqlLabelVals  = regexp.MustCompile(`\blabel_values\(\s*([^,)]+?)\s*,\s*[a-zA-Z_]+\s*\)`)
	promqlIdentRE    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promqlKeywords   = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
		"bool": true, "offset": true, "and": true, "or": true, "unless": true, "inf": true, "nan": true, "atan2": true}
)

// promqlMetricNames returns the metric names a PromQL expression (or a
// Grafana label_values(metric, label) query) selects: what is left once
// strings, label matchers, ranges, grouping clauses, functions, keywords
// and numbers are taken out.
func promqlMetricNames(expr string) []string {
	expr = promqlLabelVals.ReplaceAllString(expr, "$1")
	expr = promqlStringRE.ReplaceAllString(expr, `""`)
	expr = promqlMatchersRE.ReplaceAllString(expr, " ")
	expr = promqlGroupingRE.ReplaceAllString(expr, " ")
	var names []string
	for _, loc := range promqlIdentRE.FindAllStringIndex(expr, -1) {
		name := expr[loc[0]:loc[1]]
		if loc[0] > 0 && strings.ContainsRune("0123456789.$", rune(expr[loc[0]-1])) {
			continue // 1e3, 5m, $variable
		}
		if strings.HasPrefix(strings.TrimLeft(expr[loc[1]:], " \t\n"), "(") || promqlKeywords[strings.ToLower(name)] {
			continue // a function or an aggregation, a keyword
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	return names
}

func TestPromQLMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`pgchaos_rules_active{proxy=~"$proxy"} > 0`:                                                               {"pgchaos_rules_active"},
		`histogram_quantile(0.99, sum by (le, proxy) (rate(a_bucket{x="}{[",y!~'b'}[$__rate_interval])))`:         {"a_bucket"},
		`sum without(instance) (rate(a[5m] offset 1h)) / on (proxy) group_left(rule) b > bool 1e3 and c unless d`: {"a", "b", "c", "d"},
		`label_values(pgchaos_sessions_total, proxy)`:                                                             {"pgchaos_sessions_total"},
		`max by (proxy) (x) - ignoring(rule) y`:                                                                   {"x", "y"},
		`sum(rate(x[1m]))`:                                                                                        {"x"},
	} {
		if got := promqlMetricNames(expr); !slices.Equal(got, want) {
			t.Errorf("promqlMetricNames(%q) = %q, want %q", expr, got, want)
		}
	}
}
