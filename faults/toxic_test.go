package faults

import (
	"testing"

	"github.com/Shopify/toxiproxy/v2/toxics"
)

// A byte-level toxic rule gives each session stream a fresh toxic of its
// type, configured by its attributes, and counts as fired.
func TestSessionToxics(t *testing.T) {
	e := newTestEngine(t, Options{})
	mustAdd(t, e, Rule{Name: "slow", Action: Action{Type: "latency", Attributes: map[string]any{"latency": 100, "jitter": 10}}})
	mustAdd(t, e, Rule{Name: "reset", Match: Match{Direction: "client_to_server"}, Action: Action{Type: "reset_peer", Attributes: map[string]any{"timeout": 250}}})
	mustAdd(t, e, Rule{Name: "plain", Action: Action{Type: "slicer"}})
	mustAdd(t, e, Rule{Name: "elsewhere", Match: Match{User: "nobody"}, Action: Action{Type: "bandwidth", Attributes: map[string]any{"rate": 1}}})
	rs := e.Policy("p").Rules()
	s := baseSession()

	down := rs.SessionToxics(ServerToClient, s)
	if len(down) != 2 || down[0].Rule != "slow" || down[1].Rule != "plain" {
		t.Fatalf("server_to_client toxics %+v: want slow and plain, in rule order", down)
	}
	lat, ok := down[0].Wrapper.Toxic.(*toxics.LatencyToxic)
	if !ok || lat.Latency != 100 || lat.Jitter != 10 {
		t.Errorf("slow: %T %+v, want a latency toxic of 100ms ± 10", down[0].Wrapper.Toxic, down[0].Wrapper.Toxic)
	}
	if _, ok := down[1].Wrapper.Toxic.(*toxics.SlicerToxic); !ok {
		t.Errorf("plain: %T, want toxiproxy's slicer", down[1].Wrapper.Toxic)
	}
	again := rs.SessionToxics(ServerToClient, s)
	if again[0].Wrapper == down[0].Wrapper || again[0].Wrapper.Toxic == down[0].Wrapper.Toxic {
		t.Error("two streams share a toxic: toxics keep state")
	}

	up := rs.SessionToxics(ClientToServer, s)
	if len(up) != 1 || up[0].Rule != "reset" {
		t.Fatalf("client_to_server toxics %+v: want reset", up)
	}
	if rp, ok := up[0].Wrapper.Toxic.(*resetPeerToxic); !ok || rp.Timeout != 250 {
		t.Errorf("reset: %T %+v, want pgchaos's reset_peer with a 250ms timeout", up[0].Wrapper.Toxic, up[0].Wrapper.Toxic)
	}
	if st, _ := e.Get("", "slow"); st.Fired != 2 || st.Matched != 2 {
		t.Errorf("slow fired %d, matched %d: want 2, one per stream", st.Fired, st.Matched)
	}
	if st, _ := e.Get("", "elsewhere"); st.Fired != 0 {
		t.Errorf("a toxic for another user fired %d times", st.Fired)
	}
	var none *RuleSet
	if got := none.SessionToxics(ServerToClient, s); got != nil {
		t.Errorf("no rule set: %+v", got)
	}
}

// A toxic's probability is drawn once per session stream.
func TestSessionToxicsProbability(t *testing.T) {
	e := newTestEngine(t, Options{})
	mustAdd(t, e, Rule{Name: "rare", Action: Action{Type: "latency", Attributes: map[string]any{"latency": 1}}, Limits: Limits{Probability: floatPtr(0.1)}})
	rs := e.Policy("p").Rules()
	n := 0
	for range 400 {
		n += len(rs.SessionToxics(ServerToClient, baseSession()))
	}
	// About 40; the bounds are four standard deviations out.
	if n < 16 || n > 64 {
		t.Errorf("a toxic with probability 0.1 applied to %d of 400 streams", n)
	}
}
