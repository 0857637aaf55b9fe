package faults

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/Shopify/toxiproxy/v2/toxics"
	"github.com/rs/zerolog"
	zlog "github.com/rs/zerolog/log"
)

func init() {
	// toxiproxy's toxics log through zerolog's global logger (bandwidth
	// traces every interrupt as JSON on stderr); pgchaos logs with slog and
	// says itself what its faults do.
	zlog.Logger = zerolog.Nop()
}

// compileToxic checks a byte-level toxic's attributes by configuring one,
// and adds its problems to probs.
func compileToxic(c *compiledRule, a Action, probs *problems) {
	if a.When != "" || a.Delay != 0 || a.Jitter != 0 || a.Side != "" || a.Close != "" || a.SQLState != "" || a.Duration != 0 {
		probs.add("action", "a byte-level toxic (%s) is configured by attributes only", a.Type)
	}
	attrs := []byte("{}")
	if len(a.Attributes) > 0 {
		var err error
		if attrs, err = json.Marshal(a.Attributes); err != nil {
			probs.add("action.attributes", "%v", err)
			return
		}
	}
	c.action = ActToxic
	c.toxicType = a.Type
	c.toxicAttrs = attrs
	if _, err := c.newToxic(); err != nil {
		probs.add("action.attributes", "%v", err)
	}
}

// newToxic makes a fresh, configured instance of the rule's toxic: each
// session stream gets its own, since toxics keep state.
func (c *compiledRule) newToxic() (*toxics.ToxicWrapper, error) {
	w := &toxics.ToxicWrapper{Name: c.rule.Name, Type: c.toxicType, Toxicity: 1}
	if toxics.New(w) == nil {
		return nil, fmt.Errorf("unknown toxic type %q", c.toxicType)
	}
	if c.toxicType == "reset_peer" {
		w.Toxic = new(resetPeerToxic)
	}
	if err := json.Unmarshal(c.toxicAttrs, w.Toxic); err != nil {
		return nil, err
	}
	return w, nil
}

// Toxic is a byte-level toxic for one session stream.
type Toxic struct {
	Rule    string
	Wrapper *toxics.ToxicWrapper
	// Released is closed when the rule is removed or replaced: the stream
	// then lets go of what the toxic holds.
	Released <-chan struct{}
}

// resetPeerToxic is toxiproxy's reset_peer (on the first data, wait for
// the timeout, then end the stream, which the proxy does with an RST),
// except that an interrupt also ends the wait: toxiproxy's waits out its
// timeout, so a removed or killed stream would keep a goroutine that long.
type resetPeerToxic struct {
	Timeout int64 `json:"timeout"` // milliseconds
}

func (t *resetPeerToxic) Pipe(stub *toxics.ToxicStub) {
	select {
	case <-stub.Interrupt:
		return
	case <-stub.Input:
	}
	select {
	case <-time.After(time.Duration(t.Timeout) * time.Millisecond):
		stub.Close()
	case <-stub.Interrupt:
	}
}

// HasToxics reports whether byte-level toxics apply to this proxy's
// streams in direction d.
func (rs *RuleSet) HasToxics(d Direction) bool { return rs != nil && len(rs.toxics[d]) > 0 }

// ToxicsKey identifies the set of toxics for direction d: when it has not
// changed, a session keeps the toxics it has.
func (rs *RuleSet) ToxicsKey(d Direction) string {
	if rs == nil || len(rs.toxics[d]) == 0 {
		return ""
	}
	var b []byte
	for _, r := range rs.toxics[d] {
		b = strconv.AppendUint(b, r.id, 10)
		b = append(b, ',')
	}
	return string(b)
}

// SessionToxics returns fresh toxics for one direction of a session, in
// rule order. Each rule's probability is drawn once per session stream (as
// toxiproxy's toxicity is per connection); a toxic that matches the
// session counts as matched, one that applies as fired.
func (rs *RuleSet) SessionToxics(d Direction, s *Session) []Toxic {
	if rs == nil {
		return nil
	}
	var out []Toxic
	for i, r := range rs.toxics[d] {
		if !r.matchSession(s) {
			continue
		}
		ser := &rs.toxicSeries[d][i]
		r.state.matched.Add(1)
		ser.matched.Inc()
		if r.probability < 1 && r.state.random() >= r.probability {
			continue
		}
		w, err := r.newToxic()
		if err != nil {
			continue // validated when the rule was added
		}
		r.state.fired.Add(1)
		rs.engine.record(rs.proxy, r, ser, s, nil)
		out = append(out, Toxic{Rule: r.rule.Name, Wrapper: w, Released: r.state.release})
	}
	return out
}
