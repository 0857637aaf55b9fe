package experiments

import (
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
)

// A proxy that names a set of instances, by a list of URLs or by a DNS
// name, parses into URLs or DNS; what cannot be a set is reported where it
// is written.
func TestParseProxySets(t *testing.T) {
	src := `name: fleet
target: {dsn: postgres://db}
proxies:
- {name: pg, urls: [http://10.0.0.1:8474, "https://10.0.0.2:8474"]}
- {name: k8s, dns: pgchaos-headless.default.svc.cluster.local:8474}
- {name: tls, dns: "https://pgchaos.internal:8474"}
- {name: one, url: http://10.0.0.9:8474}
workloads:
- {name: w, type: ledger, through: pg}
`
	e, err := Parse([]byte(src), "exp.yaml", nil, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	pg, k8s, tls, one := e.Proxies[0], e.Proxies[1], e.Proxies[2], e.Proxies[3]
	if !slices.Equal(pg.URLs, []string{"http://10.0.0.1:8474", "https://10.0.0.2:8474"}) || !pg.Remote() || !pg.Set() {
		t.Errorf("urls: %+v", pg)
	}
	if k8s.DNS != "pgchaos-headless.default.svc.cluster.local:8474" || !k8s.Remote() || !k8s.Set() || k8s.Listen != "" {
		t.Errorf("dns: %+v", k8s)
	}
	if tls.DNS != "https://pgchaos.internal:8474" {
		t.Errorf("dns with a scheme: %+v", tls)
	}
	if one.URL == "" || !one.Remote() || one.Set() {
		t.Errorf("url: %+v", one)
	}

	cases := []struct {
		name, proxy string
		want        []string
	}{
		{"url and urls", `{name: pg, url: http://a:8474, urls: [http://b:8474]}`,
			[]string{`exp.yaml:4:34: proxies[0].urls: give one of url (one instance), urls or dns (a set of instances), not url and urls`}},
		{"urls and dns", `{name: pg, urls: [http://b:8474], dns: b:8474}`,
			[]string{`exp.yaml:4:37: proxies[0].dns: give one of url (one instance), urls or dns (a set of instances), not urls and dns`}},
		{"empty list", `{name: pg, urls: []}`,
			[]string{`exp.yaml:4:20: proxies[0].urls: want the control APIs of at least one instance (a list of http:// or https:// URLs)`}},
		{"null list", `{name: pg, urls: }`,
			[]string{`exp.yaml:4:20: proxies[0].urls: want the control APIs of at least one instance (a list of http:// or https:// URLs)`}},
		{"a string, not a list", `{name: pg, urls: http://a:8474}`,
			[]string{`exp.yaml:4:20: proxies[0].urls: want a list, got "http://a:8474"`}},
		{"bad URL", `{name: pg, urls: [http://a:8474, "a:8474", "ftp://b"]}`,
			[]string{
				`exp.yaml:4:36: proxies[0].urls[1]: want the control API's URL, like http://127.0.0.1:8474, got "a:8474"`,
				`exp.yaml:4:46: proxies[0].urls[2]: want the control API's URL, like http://127.0.0.1:8474, got "ftp://b"`,
			}},
		{"duplicate URL", `{name: pg, urls: [http://a:8474, http://a:8474]}`,
			[]string{`exp.yaml:4:36: proxies[0].urls[1]: http://a:8474 is listed twice (first at line 4): each instance would get every rule twice`}},
		{"dns without port", `{name: pg, dns: pgchaos-headless}`,
			[]string{`exp.yaml:4:19: proxies[0].dns: want NAME:PORT, a name whose every address is an instance and the port of their control API, got "pgchaos-headless"`}},
		{"dns with a path", `{name: pg, dns: "http://pgchaos:8474/rules"}`,
			[]string{`exp.yaml:4:19: proxies[0].dns: want NAME:PORT, a name whose every address is an instance and the port of their control API (no path), got "http://pgchaos:8474/rules"`}},
		{"dns with a port name", `{name: pg, dns: "pgchaos:api"}`,
			[]string{`exp.yaml:4:19: proxies[0].dns: want NAME:PORT, a name whose every address is an instance and the port of their control API (the port is a number), got "pgchaos:api"`}},
		{"a set with upstream", `{name: pg, dns: pgchaos:8474, upstream: target}`,
			[]string{`exp.yaml:4:33: proxies[0].upstream: a proxy with dns is already running; upstream applies to a proxy started in-process`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := "name: x\ntarget: {dsn: postgres://db}\nproxies:\n- " + c.proxy + "\n"
			_, err := Parse([]byte(src), "exp.yaml", nil, noEnv)
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("err = %v, want Errors", err)
			}
			var got []string
			for _, p := range errs {
				got = append(got, p.String())
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
		})
	}
}

// The schema knows a proxy's fields as the parser does, and that exactly
// one of upstream, url, urls and dns says where the proxy is.
func TestSchemaProxy(t *testing.T) {
	data, err := os.ReadFile("../docs/experiment.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Defs struct {
			Proxy struct {
				Properties map[string]json.RawMessage `json:"properties"`
				OneOf      []struct {
					AllOf []struct {
						Required []string `json:"required"`
					} `json:"allOf"`
				} `json:"oneOf"`
			} `json:"proxy"`
		} `json:"$defs"`
	}
	if err := json.Unmarshal(data, &schema); err != nil {
		t.Fatal(err)
	}
	p := schema.Defs.Proxy
	if got, want := sortedKeys(p.Properties), []string{"dns", "listen", "name", "upstream", "url", "urls"}; !slices.Equal(got, want) {
		t.Errorf("proxy properties %v, want %v", got, want)
	}
	var where []string
	for _, o := range p.OneOf {
		if len(o.AllOf) > 0 {
			where = append(where, o.AllOf[0].Required...)
		}
	}
	if want := []string{"upstream", "url", "urls", "dns"}; !slices.Equal(where, want) {
		t.Errorf("proxy variants require %v, want %v", where, want)
	}
}
