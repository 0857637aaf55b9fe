package runner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pgchaos/pgchaos/control"
	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/proxy"
)

// Bounds on the calls to remote pgchaos instances: an instance that was
// killed, or that a partition hides, must not hang the run or its
// teardown.
const (
	// callTimeout bounds one call to an instance's control API.
	callTimeout = 5 * time.Second
	// countTimeout bounds reading an instance's fired counts.
	countTimeout = 3 * time.Second
	// removeDeadline is how long the removal of a rule from an instance
	// is retried before the rule is reported left armed there.
	removeDeadline = 10 * time.Second
	// firstBackoff and maxBackoff space the retries of a removal.
	firstBackoff = 100 * time.Millisecond
	maxBackoff   = 2 * time.Second
)

// instance is one running pgchaos whose control API the run drives.
type instance struct {
	url string // its control API, as the reports name it
	c   *control.Client
}

// remoteProxy is a proxy of the experiment that other pgchaos processes
// run: one instance (url) or a set of them (urls, dns) that each have a
// proxy of the same name, driven as one.
type remoteProxy struct {
	name      string
	instances []*instance
	// listens are where each instance's proxy accepts clients, in the
	// order of instances: a workload's clients take them in turn.
	listens []string
}

// placement is where an injected rule landed on remote instances.
type placement struct {
	on []*instance
	// expires is when its lease ends it on those instances (zero: none).
	expires time.Time
}

// LeftArmed is an injected rule the run could not remove from an instance
// of a remote proxy. If that pgchaos still runs, the rule may still fire
// there: until Expires when it was given a lease, or until someone removes
// it (pgchaos fault remove RULE --api INSTANCE).
type LeftArmed struct {
	Rule     string `json:"rule"`
	Proxy    string `json:"proxy,omitempty"`
	Instance string `json:"instance"`
	// Error is the last attempt's, after Attempts tries over the removal
	// deadline.
	Error    string    `json:"error"`
	Attempts int       `json:"attempts"`
	Expires  time.Time `json:"expires,omitzero"`
}

func (l LeftArmed) String() string {
	s := fmt.Sprintf("rule %s could not be removed from %s after %d attempts in %s (%s): if that pgchaos still runs, the rule may still fire there",
		l.Rule, l.Instance, l.Attempts, removeDeadline, l.Error)
	if !l.Expires.IsZero() {
		s += fmt.Sprintf(" until its lease ends it at %s", l.Expires.Format("15:04:05"))
	}
	return s
}

// InstanceFired is how often a rule fired on one instance of a remote
// proxy, or why that is not known.
type InstanceFired struct {
	Instance string `json:"instance"`
	Fired    int64  `json:"fired"`
	Error    string `json:"error,omitempty"`
}

// lookupHost resolves a name to its addresses.
type lookupHost func(ctx context.Context, host string) ([]string, error)

// instanceURLs are the control APIs of a remote proxy's instances: its
// url, its urls, or its dns name's addresses now, sorted. With dns over
// https, serverName is the name the instances' certificates are for.
func instanceURLs(ctx context.Context, p experiments.Proxy, lookup lookupHost) (urls []string, serverName string, err error) {
	switch {
	case p.URL != "":
		return []string{p.URL}, "", nil
	case len(p.URLs) > 0:
		return p.URLs, "", nil
	}
	scheme, hostPort := "http", p.DNS
	for _, s := range []string{"http", "https"} {
		if rest, ok := strings.CutPrefix(p.DNS, s+"://"); ok {
			scheme, hostPort = s, rest
		}
	}
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		return nil, "", fmt.Errorf("dns %s: %w", p.DNS, err)
	}
	if lookup == nil {
		lookup = net.DefaultResolver.LookupHost
	}
	lctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	addrs, err := lookup(lctx, host)
	if err != nil {
		return nil, "", fmt.Errorf("resolve dns %s: %w", host, err)
	}
	slices.Sort(addrs)
	addrs = slices.Compact(addrs)
	if len(addrs) == 0 {
		return nil, "", fmt.Errorf("dns %s has no addresses: no instance to drive", host)
	}
	for _, a := range addrs {
		urls = append(urls, scheme+"://"+net.JoinHostPort(a, port))
	}
	if scheme == "https" {
		serverName = host
	}
	return urls, serverName, nil
}

// connectRemote finds every instance of a remote proxy and where each
// one's proxy listens. Every instance must answer: a set with an instance
// missing at the start is not the set the experiment names.
func connectRemote(ctx context.Context, p experiments.Proxy, opts Options) (*remoteProxy, error) {
	urls, serverName, err := instanceURLs(ctx, p, opts.LookupHost)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", p.Name, err)
	}
	copts := opts.API
	if serverName != "" {
		copts = append(slices.Clip(copts), control.WithServerName(serverName))
	}
	rp := &remoteProxy{name: p.Name, listens: make([]string, len(urls))}
	for _, u := range urls {
		rp.instances = append(rp.instances, &instance{url: u, c: control.NewClient(u, copts...)})
	}
	errs := each(rp.instances, func(i int, in *instance) error {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		listen, err := in.c.ProxyListen(cctx, p.Name)
		if err != nil {
			return err
		}
		rp.listens[i] = clientAddr(in.url, listen)
		return nil
	})
	if msg := instanceErrors(rp.instances, errs); msg != "" {
		if p.Set() {
			return nil, fmt.Errorf("proxy %s: %d of %d instances did not answer: %s", p.Name, countErrs(errs), len(errs), msg)
		}
		return nil, fmt.Errorf("proxy %s at %s: %v", p.Name, p.URL, firstErr(errs))
	}
	return rp, nil
}

// clientAddr is where a client reaches a remote proxy that listens on
// listen: on an unspecified address (0.0.0.0:6543), at the host of the
// instance's control API.
func clientAddr(apiURL, listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		if u, err := url.Parse(apiURL); err == nil && u.Hostname() != "" {
			return net.JoinHostPort(u.Hostname(), port)
		}
	}
	return listen
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// reason says briefly why a call to an instance failed: the client's
// errors repeat the URL and the request.
func reason(err error) string {
	var op *net.OpError
	var apiErr *control.APIError
	switch {
	case errors.As(err, &apiErr):
		return apiErr.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return "unreachable: no answer in time"
	case errors.As(err, &op):
		return "unreachable: " + op.Err.Error()
	}
	return err.Error()
}

// FiredText is the window's fired count, with each remote instance's.
func (w FaultWindow) FiredText() string {
	return strconv.FormatInt(w.Fired, 10) + perInstance(w.Instances)
}

// perInstance shows each instance's count, for the console ("" without
// instances).
func perInstance(per []InstanceFired) string {
	if len(per) == 0 {
		return ""
	}
	var parts []string
	for _, f := range per {
		if f.Error != "" {
			parts = append(parts, f.Instance+": not known, "+f.Error)
			continue
		}
		parts = append(parts, fmt.Sprintf("%s: %d", f.Instance, f.Fired))
	}
	return " (" + strings.Join(parts, "; ") + ")"
}

// each calls f for every instance at once and returns their errors, in
// the order of the instances.
func each(ins []*instance, f func(i int, in *instance) error) []error {
	errs := make([]error, len(ins))
	var wg sync.WaitGroup
	for i, in := range ins {
		wg.Go(func() { errs[i] = f(i, in) })
	}
	wg.Wait()
	return errs
}

func countErrs(errs []error) int {
	n := 0
	for _, e := range errs {
		if e != nil {
			n++
		}
	}
	return n
}

// instanceErrors names each instance that failed, with its error ("" none).
func instanceErrors(ins []*instance, errs []error) string {
	var parts []string
	for i, e := range errs {
		if e != nil {
			parts = append(parts, ins[i].url+": "+reason(e))
		}
	}
	return strings.Join(parts, "; ")
}

// targets are the instances a rule goes to: those of its proxy, or, for a
// rule of every proxy, every instance of every remote proxy once.
func (env *environment) targets(proxyName string) []*instance {
	if rp, ok := env.remote[proxyName]; ok {
		return rp.instances
	}
	if proxyName != "" {
		return nil
	}
	var out []*instance
	seen := map[string]bool{}
	for _, name := range env.remoteOrder {
		for _, in := range env.remote[name].instances {
			if !seen[in.url] {
				seen[in.url] = true
				out = append(out, in)
			}
		}
	}
	return out
}

func ruleKey(r faults.Rule) string { return r.Proxy + "\x00" + r.Name }

// putRemote puts a rule on every instance it goes to, all or none: when
// one refuses it or cannot be reached, it is removed from those that took
// it, since a fault on part of the set is not the experiment asked for.
// lease > 0 makes the instances end the rule by themselves that long after
// it was put (its limits.expires), in case its removal cannot reach one.
func (env *environment) putRemote(ctx context.Context, r faults.Rule, lease time.Duration) error {
	ins := env.targets(r.Proxy)
	if len(ins) == 0 {
		return nil
	}
	put := r
	var expires time.Time
	if lease > 0 && (put.Limits.Expires == 0 || time.Duration(put.Limits.Expires) > lease) {
		put.Limits.Expires = faults.Duration(lease)
		expires = time.Now().Add(lease)
	}
	errs := each(ins, func(_ int, in *instance) error {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		_, err := in.c.PutRule(cctx, put)
		return err
	})
	var took, maybe []*instance
	for i, e := range errs {
		switch {
		case e == nil:
			took = append(took, ins[i])
		case mayHaveLanded(e):
			maybe = append(maybe, ins[i])
		}
	}
	if len(took) == len(ins) {
		env.mu.Lock()
		env.placed[ruleKey(r)] = &placement{on: took, expires: expires}
		for _, in := range took {
			if !slices.Contains(env.touched, in.url) {
				env.touched = append(env.touched, in.url)
			}
		}
		env.mu.Unlock()
		return nil
	}
	msg := fmt.Sprintf("rule %s reached %d of %d instances (%s)", r.Name, len(took), len(ins), instanceErrors(ins, errs))
	// An instance whose answer was lost may hold the rule: it is removed
	// there too (one that never had it answers 404, which counts as done).
	holders := slices.Concat(took, maybe)
	if len(holders) == 0 {
		return errors.New(msg)
	}
	left := env.removeFrom(ctx, r, &placement{on: holders, expires: expires})
	that := "that took it"
	if len(maybe) > 0 {
		that = "that took it or may have (their answer was lost)"
	}
	if len(left) == 0 {
		return fmt.Errorf("%s; removed it from the %d %s", msg, len(holders), that)
	}
	var not []string
	for _, l := range left {
		not = append(not, l.Instance)
	}
	return fmt.Errorf("%s; removed it from %d of the %d %s, not from %s", msg, len(holders)-len(left), len(holders), that, strings.Join(not, ", "))
}

// mayHaveLanded reports whether a put that failed with err may still have
// reached the instance: its answer was lost after the request could be
// sent. A refused connection, a failed dial or an answer with an error
// status means the instance does not hold the rule.
func mayHaveLanded(err error) bool {
	var apiErr *control.APIError
	var op *net.OpError
	switch {
	case errors.As(err, &apiErr):
		return false
	case errors.As(err, &op) && op.Op == "dial":
		return false
	}
	return true
}

// removeRemote removes a rule from every instance it landed on, and
// reports those it could not be removed from.
func (env *environment) removeRemote(ctx context.Context, r faults.Rule) []LeftArmed {
	env.mu.Lock()
	p := env.placed[ruleKey(r)]
	delete(env.placed, ruleKey(r))
	env.mu.Unlock()
	if p == nil {
		return nil
	}
	return env.removeFrom(ctx, r, p)
}

// removeFrom removes a rule from the instances of p at once, each retried
// with backoff until removeDeadline; an instance that no longer has it (it
// restarted) is done. A removal goes on after Ctrl-C: it is the cleanup.
func (env *environment) removeFrom(ctx context.Context, r faults.Rule, p *placement) []LeftArmed {
	ctx = context.WithoutCancel(ctx)
	deadline := time.Now().Add(removeDeadline)
	left := make([]*LeftArmed, len(p.on))
	each(p.on, func(i int, in *instance) error {
		backoff := firstBackoff
		for attempt := 1; ; attempt++ {
			cctx, cancel := context.WithDeadline(ctx, earliest(time.Now().Add(callTimeout), deadline))
			err := in.c.RemoveRule(cctx, r.Proxy, r.Name)
			cancel()
			var apiErr *control.APIError
			if err == nil || errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound {
				return nil
			}
			if time.Now().Add(backoff).After(deadline) {
				left[i] = &LeftArmed{Rule: r.Name, Proxy: r.Proxy, Instance: in.url, Error: reason(err), Attempts: attempt, Expires: p.expires}
				return err
			}
			sleep(ctx, backoff)
			backoff = min(2*backoff, maxBackoff)
		}
	})
	var out []LeftArmed
	for _, l := range left {
		if l != nil {
			out = append(out, *l)
		}
	}
	if len(out) > 0 && env.leftArmed != nil {
		env.leftArmed(out) // recorded; the caller's error tells the console
	}
	return out
}

// firedRemote reads how often a rule fired on each instance it landed on.
func (env *environment) firedRemote(ctx context.Context, r faults.Rule) (int64, []InstanceFired) {
	env.mu.Lock()
	p := env.placed[ruleKey(r)]
	env.mu.Unlock()
	if p == nil {
		return 0, nil
	}
	per := make([]InstanceFired, len(p.on))
	each(p.on, func(i int, in *instance) error {
		per[i].Instance = in.url
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), countTimeout)
		defer cancel()
		list, err := in.c.Rules(cctx)
		if err != nil {
			per[i].Error = reason(err)
			return err
		}
		for _, st := range list {
			if st.Name == r.Name && st.Proxy == r.Proxy {
				per[i].Fired += st.Fired
			}
		}
		return nil
	})
	var n int64
	for _, f := range per {
		n += f.Fired
	}
	return n, per
}

// killRemote ends the matching sessions of a remote proxy on each of its
// instances.
func (env *environment) killRemote(ctx context.Context, rp *remoteProxy, match func(s proxy.SessionInfo) bool) (int, error) {
	var mu sync.Mutex
	killed := 0
	errs := each(rp.instances, func(_ int, in *instance) error {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		list, err := in.c.Sessions(cctx)
		if err != nil {
			return err
		}
		for _, s := range list {
			if match(s) {
				if err := in.c.KillSession(cctx, s.ID); err == nil {
					mu.Lock()
					killed++
					mu.Unlock()
				}
			}
		}
		return nil
	})
	if msg := instanceErrors(rp.instances, errs); msg != "" {
		return killed, fmt.Errorf("kill_sessions on %d of %d instances of %s failed: %s", countErrs(errs), len(errs), rp.name, msg)
	}
	return killed, nil
}
