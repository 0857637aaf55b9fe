package control

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pgchaos/pgchaos/faults"
)

func ptr[T any](v T) *T { return &v }

func TestToxicRule(t *testing.T) {
	cases := []struct {
		name    string
		in      toxicRequest
		want    faults.Rule // Proxy is always "pg"
		wantErr string
	}{
		{
			name: "byte toxic defaults to downstream",
			in:   toxicRequest{Type: "latency", Attributes: map[string]any{"latency": 100.0}},
			want: faults.Rule{Name: "latency_downstream", Match: faults.Match{Direction: "server_to_client"},
				Action: faults.Action{Type: "latency", Attributes: map[string]any{"latency": 100.0}}},
		},
		{
			name: "stream is case-insensitive",
			in:   toxicRequest{Type: "bandwidth", Stream: ptr("UpStream"), Toxicity: ptr[float32](0.5)},
			want: faults.Rule{Name: "bandwidth_upstream", Match: faults.Match{Direction: "client_to_server"},
				Action: faults.Action{Type: "bandwidth"}, Limits: faults.Limits{Probability: ptr(0.5)}},
		},
		{
			name: "pg_error on the client's stream",
			in:   toxicRequest{Type: "pg_error", Stream: ptr("upstream"), Toxicity: ptr[float32](1), Attributes: map[string]any{"sql": "^UPDATE", "sqlstate": "40001", "times": 2.0}},
			want: faults.Rule{Name: "pg_error_upstream", Match: faults.Match{Direction: "client_to_server", SQL: "^UPDATE"},
				Action: faults.Action{Type: "error", SQLState: "40001"}, Limits: faults.Limits{Probability: ptr(1.0), Times: 2}},
		},
		{
			name: "no stream: the matchers decide",
			in:   toxicRequest{Name: "cut", Type: "pg_disconnect", Attributes: map[string]any{"tag": "PREPARE TRANSACTION", "close": "rst"}},
			want: faults.Rule{Name: "cut", Match: faults.Match{Tag: "PREPARE TRANSACTION"}, Action: faults.Action{Type: "disconnect", Close: "rst"}},
		},
		{
			name: "no stream, a tag: named downstream",
			in:   toxicRequest{Type: "pg_error", Attributes: map[string]any{"tag": "COMMIT", "sqlstate": "40001"}},
			want: faults.Rule{Name: "pg_error_downstream", Match: faults.Match{Tag: "COMMIT"}, Action: faults.Action{Type: "error", SQLState: "40001"}},
		},
		{
			name: "a direction attribute beats the stream",
			in:   toxicRequest{Type: "pg_drop", Stream: ptr("downstream"), Attributes: map[string]any{"direction": "client_to_server", "message": "sync"}},
			want: faults.Rule{Name: "pg_drop_upstream", Match: faults.Match{Direction: "client_to_server", Message: faults.StringList{"sync"}}, Action: faults.Action{Type: "drop"}},
		},
		{
			name: "refuse is a connect event, whatever the stream",
			in:   toxicRequest{Type: "pg_refuse", Stream: ptr("downstream"), Attributes: map[string]any{"sqlstate": 53300.0, "error_message": "too many"}},
			want: faults.Rule{Name: "pg_refuse_upstream", Match: faults.Match{Event: "connect"}, Action: faults.Action{Type: "refuse", SQLState: "53300", Message: "too many"}},
		},
		{
			name: "delays in milliseconds or as durations; the CLI's numbers and strings",
			in: toxicRequest{Type: "pg_delay", Stream: ptr("upstream"), Attributes: map[string]any{
				"statement": []any{"select", "update"}, "delay": 50.0, "jitter": "5ms", "once_per_session": "true", "expires": "1m"}},
			want: faults.Rule{Name: "pg_delay_upstream", Match: faults.Match{Direction: "client_to_server", Statement: faults.StringList{"select", "update"}},
				Action: faults.Action{Type: "delay", Delay: faults.Duration(50 * time.Millisecond), Jitter: faults.Duration(5 * time.Millisecond)},
				Limits: faults.Limits{OncePerSession: true, Expires: faults.Duration(time.Minute)}},
		},
		{
			name: "a SQLSTATE the CLI sent as a number keeps its leading zero",
			in:   toxicRequest{Type: "pg_error", Stream: ptr("upstream"), Attributes: map[string]any{"sqlstate": 8006.0}},
			want: faults.Rule{Name: "pg_error_upstream", Match: faults.Match{Direction: "client_to_server"}, Action: faults.Action{Type: "error", SQLState: "08006"}},
		},
		{
			name: "toxicity is clamped",
			in:   toxicRequest{Type: "pg_hang", Stream: ptr("upstream"), Toxicity: ptr[float32](3)},
			want: faults.Rule{Name: "pg_hang_upstream", Match: faults.Match{Direction: "client_to_server"}, Action: faults.Action{Type: "hang"}, Limits: faults.Limits{Probability: ptr(1.0)}},
		},
		{name: "unknown type", in: toxicRequest{Type: "nope"}, wantErr: "invalid toxic type"},
		{name: "pg_ of a byte toxic", in: toxicRequest{Type: "pg_latency"}, wantErr: "invalid toxic type"},
		{name: "bad stream", in: toxicRequest{Type: "latency", Stream: ptr("sideways")}, wantErr: "stream was invalid"},
		{name: "empty stream", in: toxicRequest{Type: "pg_drop", Stream: ptr("")}, wantErr: "stream was invalid"},
		{name: "unknown attributes", in: toxicRequest{Type: "pg_error", Attributes: map[string]any{"sqlstat": "1", "zz": 1.0}}, wantErr: "unknown attribute(s) for pg_error: sqlstat, zz"},
		{name: "wrong type", in: toxicRequest{Type: "pg_error", Attributes: map[string]any{"times": "x"}}, wantErr: "attribute times:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := toxicRule("pg", tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want an error containing %q, got %v (%+v)", tc.wantErr, err, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.want.Proxy = "pg"
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("rule:\n got %+v\nwant %+v", got, tc.want)
			}
			if err := faults.Validate(got); err != nil {
				t.Fatalf("the engine rejects the rule: %v", err)
			}
			// Shown as a toxic and read back, it is the same rule.
			tox := toxicOf(got)
			if wantType := tc.in.Type; tox.Type != wantType || tox.Name != got.Name {
				t.Fatalf("toxic: %+v", tox)
			}
			if isByteToxic(got.Action.Type) {
				return
			}
			back := faults.Rule{Name: got.Name, Proxy: "pg", Action: faults.Action{Type: got.Action.Type}, Limits: faults.Limits{Probability: got.Limits.Probability}}
			if got.Match.Direction != "" {
				back.Match.Direction, _ = parseStream(tox.Stream)
			}
			if _, err := applyPGAttrs(&back, tox.Type, jsonRoundTrip(t, tox.Attributes)); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, got) {
				t.Fatalf("read back:\n got %+v\nwant %+v", back, got)
			}
		})
	}
}

func jsonRoundTrip(t *testing.T, m map[string]any) map[string]any {
	t.Helper()
	out := map[string]any{}
	for k, v := range m {
		var raw any = v
		switch x := v.(type) {
		case faults.Duration:
			raw = time.Duration(x).String()
		case faults.StringList:
			l := make([]any, len(x))
			for i, s := range x {
				l[i] = s
			}
			raw = l
		}
		out[k] = raw
	}
	return out
}

func TestByteToxicShowsEveryAttribute(t *testing.T) {
	tox := toxicOf(faults.Rule{Name: "l", Proxy: "pg", Action: faults.Action{Type: "latency", Attributes: map[string]any{"latency": 100.0}}})
	if tox.Stream != "downstream" || tox.Toxicity != 1 || !reflect.DeepEqual(tox.Attributes, map[string]any{"latency": 100.0, "jitter": 0.0}) {
		t.Fatalf("latency toxic: %+v", tox)
	}
}

func TestEngineErrorsNameAttributes(t *testing.T) {
	cases := []struct {
		in   toxicRequest
		want string
	}{
		{toxicRequest{Type: "pg_error", Stream: ptr("upstream")}, "bad request body: sqlstate: is required"},
		{toxicRequest{Type: "pg_error", Stream: ptr("downstream"), Attributes: map[string]any{"sql": "x", "sqlstate": "40001"}}, "bad request body: sql: "},
		{toxicRequest{Type: "pg_drop", Attributes: map[string]any{"statement": []any{"nope"}}}, "bad request body: statement[0]: "},
		{toxicRequest{Type: "pg_error", Attributes: map[string]any{"sqlstate": "40001", "severity": "PANIC"}}, "bad request body: severity: "},
		{toxicRequest{Type: "latency", Attributes: map[string]any{"latency": "slow"}}, "bad request body: attributes: "},
	}
	e := faults.NewEngine(faults.Options{})
	for _, tc := range cases {
		rule, err := toxicRule("pg", tc.in)
		if err == nil {
			_, err = e.Add(rule)
		}
		te := tpErr(err)
		if te.status != 400 || !strings.HasPrefix(te.msg, tc.want) {
			t.Errorf("%+v: got %d %q, want 400 %q", tc.in, te.status, te.msg, tc.want)
		}
	}
	if te := tpErr(errors.New("listen tcp: address in use")); te.status != 500 {
		t.Errorf("other errors: %+v", te)
	}
}
