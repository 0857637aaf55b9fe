package verify

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/history"
)

// rpo checks what a drill lost: acknowledged ledger entries missing on the
// node that serves after it (VerifyDSN), as a count and as the window of
// their acknowledgements.
func rpo(ctx context.Context, c *experiments.RPO, run Run) Verdict {
	v := newVerdict(c.Type(), c.Workload)
	table := ledgerTable(run, c.Workload)
	v.Evidence["table"] = table
	ops := opsOf(run.History, c.Workload)
	var acked []history.Op
	for _, op := range ops {
		if op.Outcome == history.OK && opKey(op) != "" {
			acked = append(acked, op)
		}
	}
	if len(acked) == 0 {
		v.judge(false, "workload %q had no acknowledged writes: nothing to judge", c.Workload)
		return v
	}
	keys := make([]string, len(acked))
	for i, op := range acked {
		keys[i] = opKey(op)
	}
	present, err := ledgerPresent(ctx, run.VerifyDSN, table, keys)
	if err != nil {
		return failed(v.Type, c.Workload, err)
	}
	var lost []history.Op
	for _, op := range acked {
		if !present[opKey(op)] {
			lost = append(lost, op)
		}
	}
	slices.SortFunc(lost, func(a, b history.Op) int { return a.End.Compare(b.End) })

	e := v.Evidence
	e["acknowledged"] = len(acked)
	e["lost"] = len(lost)
	e["max_lost"] = c.MaxLost
	lostKeys := make([]string, 0, len(lost))
	for _, op := range lost {
		lostKeys = append(lostKeys, opKey(op))
	}
	e["lost_keys"] = bounded(lostKeys)
	// The window of lost data runs from the last write kept before the
	// first one lost (where the data that survived ends) to the last one
	// lost; with no write kept before, from the first lost.
	var window time.Duration
	if len(lost) > 0 {
		first, last := lost[0].End, lost[len(lost)-1].End
		from := first
		if t, ok := lastAckBefore(acked, first, present); ok {
			e["last_kept_ack_before"] = t
			from = t
		}
		window = last.Sub(from)
		e["first_lost_ack"] = first
		e["last_lost_ack"] = last
	}
	e["window"] = window.String()
	if c.MaxWindow > 0 {
		e["max_window"] = c.MaxWindow.String()
	}

	detail := fmt.Sprintf("%d of %d acknowledged writes lost", len(lost), len(acked))
	if len(lost) > 0 {
		detail += fmt.Sprintf(", a window of %s (acknowledged %s to %s)", window.Round(time.Millisecond),
			lost[0].End.Format("15:04:05.000"), lost[len(lost)-1].End.Format("15:04:05.000"))
	}
	var problems []string
	if len(lost) > c.MaxLost {
		problems = append(problems, fmt.Sprintf("more than max_lost %d", c.MaxLost))
	}
	if c.MaxWindow > 0 && window > time.Duration(c.MaxWindow) {
		problems = append(problems, fmt.Sprintf("a window over max_window %s", c.MaxWindow))
	}
	if len(problems) > 0 {
		v.judge(false, "%s: %s", detail, strings.Join(problems, " and "))
	} else {
		v.judge(true, "%s", detail)
	}
	return v
}

// lastAckBefore is the latest acknowledgement before t of an entry that
// was kept, if any: where the data that survived ends.
func lastAckBefore(acked []history.Op, t time.Time, present map[string]bool) (time.Time, bool) {
	var best time.Time
	for _, op := range acked {
		if present[opKey(op)] && op.End.Before(t) && op.End.After(best) {
			best = op.End
		}
	}
	return best, !best.IsZero()
}

// rto measures how long a workload's writes (and, for a sql workload, its
// reads) were down: from the start of a fault step to the first
// acknowledgement of an operation that started after that step began and
// ended after it did (an operation the fault could have hit). The step is
// the one named From, or else the outage's: the last fault step to start
// before the workload's first failure after the first fault step (a
// replication delay injected first does not start the outage a crash
// does later), or the first fault step when nothing failed.
func rto(c *experiments.RTO, run Run) Verdict {
	v := newVerdict(c.Type(), c.Workload)
	if len(run.FaultSteps) == 0 && c.From == "" {
		v.judge(false, "no fault step ran: nothing to measure from")
		return v
	}
	ops := opsOf(run.History, c.Workload)
	if len(ops) == 0 {
		v.judge(false, "workload %q recorded no operations: nothing to judge", c.Workload)
		return v
	}
	from, ok := outageStep(c, run, ops)
	if !ok {
		v.judge(false, "no fault step named %q ran", c.From)
		return v
	}
	t0 := from.Start
	v.Evidence["measured_from"] = from.Name
	v.Evidence["fault_start"] = t0
	if c.Max > 0 {
		v.Evidence["max"] = c.Max.String()
	}
	classes := map[string][]history.Op{}
	for _, op := range ops {
		k := "writes"
		if isRead(run, c.Workload, op) {
			k = "reads"
		}
		classes[k] = append(classes[k], op)
	}
	pass := true
	var parts []string
	for _, class := range []string{"writes", "reads"} {
		list, ok := classes[class]
		if !ok {
			continue
		}
		m := measure(list, from.Window)
		ev := map[string]any{
			"failed_or_unknown": m.failures,
		}
		if !m.lastBefore.IsZero() {
			ev["last_ack_before"] = m.lastBefore
		}
		if m.back.IsZero() {
			pass = false
			ev["rto"] = nil
			parts = append(parts, fmt.Sprintf("%s never came back after the fault (%d failed or unknown since)", class, m.failures))
			v.Evidence[class] = ev
			continue
		}
		d := m.back.Sub(t0)
		ev["first_ack_after"] = m.back
		ev["rto"] = d.String()
		ev["rto_ms"] = d.Milliseconds()
		v.Evidence[class] = ev
		part := fmt.Sprintf("%s back after %s (%d failed or unknown)", class, d.Round(time.Millisecond), m.failures)
		if c.Max > 0 && d > time.Duration(c.Max) {
			pass = false
			part += fmt.Sprintf(", over max %s", c.Max)
		}
		parts = append(parts, part)
	}
	v.judge(pass, "%s", strings.Join(parts, "; "))
	return v
}

// outageStep is the fault step rto measures from.
func outageStep(c *experiments.RTO, run Run, ops []history.Op) (Step, bool) {
	if c.From != "" {
		for _, st := range append(run.FaultSteps, run.MethodSteps...) {
			if st.Name == c.From {
				return st, true
			}
		}
		return Step{}, false
	}
	first := run.FaultSteps[0]
	var failure time.Time
	for _, op := range ops {
		if op.Outcome != history.OK && !op.End.Before(first.Start) && (failure.IsZero() || op.End.Before(failure)) {
			failure = op.End
		}
	}
	if failure.IsZero() {
		return first, true
	}
	out := first
	for _, st := range run.FaultSteps {
		if st.Start.Before(failure) {
			out = st
		}
	}
	return out, true
}

type recovery struct {
	lastBefore time.Time // the last acknowledgement before the fault
	back       time.Time // the first after it; zero: none
	failures   int       // operations that failed or ended unknown in between
}

func measure(ops []history.Op, fault Window) recovery {
	var m recovery
	for _, op := range ops {
		switch {
		case op.Outcome != history.OK:
		case op.End.Before(fault.Start):
			if op.End.After(m.lastBefore) {
				m.lastBefore = op.End
			}
		case !op.Start.Before(fault.Start) && !op.End.Before(fault.End):
			if m.back.IsZero() || op.End.Before(m.back) {
				m.back = op.End
			}
		}
	}
	for _, op := range ops {
		if op.Outcome != history.OK && !op.End.Before(fault.Start) && (m.back.IsZero() || op.End.Before(m.back)) {
			m.failures++
		}
	}
	return m
}

// isRead reports whether an operation of a sql workload only reads.
func isRead(run Run, workload string, op history.Op) bool {
	w, ok := run.Workloads[workload]
	if !ok || w.SQL == nil {
		return false
	}
	for _, st := range w.SQL.Statements {
		if st.Transaction {
			continue
		}
		first := strings.ToLower(strings.Fields(st.SQL + " x")[0])
		if (first == "select" || first == "show" || first == "values" || first == "table") &&
			strings.HasPrefix(strings.Join(strings.Fields(st.SQL), " "), op.Kind) {
			return true
		}
	}
	return false
}

// currentTimeline is the timeline a node writes, or replays, WAL on.
const currentTimeline = `SELECT CASE WHEN pg_is_in_recovery()
	THEN (SELECT received_tli FROM pg_stat_wal_receiver)
	ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint END,
	NOT pg_is_in_recovery()`

// NodeTimeline reads a node's timeline and whether it accepts writes.
func NodeTimeline(ctx context.Context, dsn string) (tli int64, primary bool, err error) {
	conn, err := connect(ctx, dsn)
	if err != nil {
		return 0, false, err
	}
	defer closeConn(ctx, conn)
	var t *int64
	if err := conn.QueryRow(ctx, currentTimeline).Scan(&t, &primary); err != nil {
		return 0, false, err
	}
	if t != nil {
		tli = *t
	}
	return tli, primary, nil
}

// timeline checks a cluster after a drill: the serving node's timeline
// moved on exactly when a standby was promoted, there is one primary, and
// no acknowledged ledger write is only on another node after the
// promotion.
func timeline(ctx context.Context, run Run) Verdict {
	v := newVerdict("timeline", "")
	if len(run.Nodes) == 0 {
		v.judge(false, "no embedded cluster: nothing to judge")
		return v
	}
	type state struct {
		Name     string `json:"name"`
		Running  bool   `json:"running"`
		Timeline int64  `json:"timeline,omitempty"`
		Primary  bool   `json:"primary"`
		Error    string `json:"error,omitempty"`
	}
	var nodes []state
	var primaries []string
	var serving state
	for _, n := range run.Nodes {
		st := state{Name: n.Name, Running: n.Running}
		if n.Running {
			tli, primary, err := NodeTimeline(ctx, n.DSN)
			st.Timeline, st.Primary = tli, primary
			if err != nil {
				st.Error = err.Error()
			}
			if primary {
				primaries = append(primaries, n.Name)
			}
		}
		if n.Name == run.Serving {
			serving = st
		}
		nodes = append(nodes, st)
	}
	v.Evidence["nodes"] = nodes
	v.Evidence["serving"] = run.Serving
	v.Evidence["start_timeline"] = run.StartTimeline
	var problems []string
	promoted := len(run.Promotions) > 0 || run.Serving != cmp.Or(run.Primary, experiments.NodePrimary)
	switch {
	case serving.Error != "" || !serving.Primary:
		problems = append(problems, fmt.Sprintf("%s, the node that serves, does not accept writes%s", run.Serving, errSuffix(serving.Error)))
	case run.StartTimeline == 0:
		problems = append(problems, "the timeline could not be read when the method began, so whether it moved on is not known")
	case promoted && serving.Timeline <= run.StartTimeline:
		problems = append(problems, fmt.Sprintf("%s was promoted, yet its timeline %d did not move on from %d", run.Serving, serving.Timeline, run.StartTimeline))
	case !promoted && serving.Timeline != run.StartTimeline:
		problems = append(problems, fmt.Sprintf("no standby was promoted, yet the timeline moved from %d to %d", run.StartTimeline, serving.Timeline))
	}
	if len(primaries) > 1 {
		problems = append(problems, fmt.Sprintf("split brain: %s all accept writes", strings.Join(primaries, ", ")))
	}
	brain, err := splitBrainWrites(ctx, run)
	if err != nil {
		problems = append(problems, err.Error())
	}
	for node, keys := range brain {
		problems = append(problems, fmt.Sprintf("split brain: %s acknowledged after the promotion only on %s", count(len(keys), "write"), node))
		v.Evidence["split_brain_"+node] = bounded(keys)
	}
	detail := fmt.Sprintf("%s serves on timeline %d (the method began on %d)", run.Serving, serving.Timeline, run.StartTimeline)
	if len(problems) > 0 {
		v.judge(false, "%s; %s", strings.Join(problems, "; "), detail)
	} else {
		v.judge(true, "%s; one primary", detail)
	}
	return v
}

func errSuffix(e string) string {
	if e == "" {
		return ""
	}
	return " (" + e + ")"
}

// splitBrainWrites finds, for each running node other than the one that
// serves, the acknowledged ledger writes it has and the serving node does
// not, acknowledged after the first promotion: writes a second primary
// took.
func splitBrainWrites(ctx context.Context, run Run) (map[string][]string, error) {
	if len(run.Promotions) == 0 {
		return nil, nil
	}
	promotedAt := run.Promotions[0].End
	out := map[string][]string{}
	for name, w := range run.Workloads {
		if w.Ledger == nil {
			continue
		}
		table := ledgerTable(run, name)
		var keys []string
		for _, op := range opsOf(run.History, name) {
			if op.Outcome == history.OK && op.End.After(promotedAt) && opKey(op) != "" {
				keys = append(keys, opKey(op))
			}
		}
		if len(keys) == 0 {
			continue
		}
		onServing, err := ledgerPresent(ctx, run.VerifyDSN, table, keys)
		if err != nil {
			return nil, err
		}
		for _, n := range run.Nodes {
			if n.Name == run.Serving || !n.Running {
				continue
			}
			there, err := ledgerPresent(ctx, n.DSN, table, keys)
			if err != nil {
				return nil, fmt.Errorf("reading %s for split-brain writes: %w", n.Name, err)
			}
			for _, k := range keys {
				if there[k] && !onServing[k] {
					out[n.Name] = append(out[n.Name], k)
				}
			}
		}
	}
	return out, nil
}

// replication checks that standbys stream from the node that serves and
// catch up with it.
func replication(ctx context.Context, c *experiments.Replication, run Run) Verdict {
	v := newVerdict(c.Type(), "")
	if len(run.Nodes) == 0 {
		v.judge(false, "no embedded cluster: nothing to judge")
		return v
	}
	standbys := c.Standbys
	if len(standbys) == 0 {
		for _, n := range run.Nodes {
			if n.Name != run.Serving {
				standbys = append(standbys, n.Name)
			}
		}
	}
	if len(standbys) == 0 {
		v.judge(false, "no standby to check")
		return v
	}
	maxLag := time.Duration(c.MaxLag)
	if maxLag <= 0 {
		maxLag = time.Duration(experiments.DefaultMaxLag)
	}
	v.Evidence["max_lag"] = maxLag.String()
	primary, err := connect(ctx, run.VerifyDSN)
	if err != nil {
		return failed(v.Type, "", err)
	}
	defer closeConn(ctx, primary)
	var target string
	var tli int64
	if err := primary.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text, ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint`).Scan(&target, &tli); err != nil {
		return failed(v.Type, "", fmt.Errorf("reading %s's WAL position: %w", run.Serving, err))
	}
	v.Evidence["serving"], v.Evidence["timeline"], v.Evidence["target_lsn"] = run.Serving, tli, target

	dsn := map[string]Node{}
	for _, n := range run.Nodes {
		dsn[n.Name] = n
	}
	type state struct {
		Streaming bool   `json:"streaming"`
		Timeline  int64  `json:"timeline,omitempty"`
		ReplayLSN string `json:"replay_lsn,omitempty"`
		CaughtUp  string `json:"caught_up_after,omitempty"`
		Problem   string `json:"problem,omitempty"`
	}
	states := map[string]*state{}
	var problems []string
	for _, name := range standbys {
		st := &state{}
		states[name] = st
		n, ok := dsn[name]
		switch {
		case !ok:
			st.Problem = "no such node"
		case name == run.Serving:
			st.Problem = "it is the node that serves"
		case !n.Running:
			st.Problem = "it is not running"
		default:
			st.Problem = catchUp(ctx, n, target, tli, maxLag, &st.Streaming, &st.Timeline, &st.ReplayLSN, &st.CaughtUp)
		}
		if st.Problem != "" {
			problems = append(problems, name+": "+st.Problem)
		}
	}
	v.Evidence["standbys"] = states
	if len(problems) > 0 {
		v.judge(false, "%s", strings.Join(problems, "; "))
		return v
	}
	var parts []string
	for _, name := range standbys {
		parts = append(parts, fmt.Sprintf("%s caught up in %s", name, states[name].CaughtUp))
	}
	verb := "stream"
	if len(standbys) == 1 {
		verb = "streams"
	}
	v.judge(true, "%s %s from %s on timeline %d; %s", strings.Join(standbys, ", "), verb, run.Serving, tli, strings.Join(parts, ", "))
	return v
}

// catchUp polls a standby until its WAL receiver streams and it has
// replayed target on timeline tli, or maxLag passes; it returns
// what was still wrong then.
func catchUp(ctx context.Context, n Node, target string, tli int64, maxLag time.Duration, streaming *bool, timeline *int64, replay, took *string) string {
	conn, err := connect(ctx, n.DSN)
	if err != nil {
		return err.Error()
	}
	defer closeConn(ctx, conn)
	start := time.Now()
	for {
		problem := ""
		// From the standby's side: whatever application_name its
		// primary_conninfo gives, its WAL receiver says what it streams.
		var state *string
		var recovering, caught bool
		var t *int64
		var lsn *string
		if err := conn.QueryRow(ctx, `SELECT pg_is_in_recovery(), (SELECT status FROM pg_stat_wal_receiver), (SELECT received_tli FROM pg_stat_wal_receiver),
			pg_last_wal_replay_lsn()::text, coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)`, target).Scan(&recovering, &state, &t, &lsn, &caught); err != nil {
			return err.Error()
		}
		*streaming = state != nil && *state == "streaming"
		if t != nil {
			*timeline = *t
		}
		if lsn != nil {
			*replay = *lsn
		}
		switch {
		case !recovering:
			return "it is not a standby (it accepts writes)"
		case !*streaming:
			problem = fmt.Sprintf("its WAL receiver is %s", orElse(state, "not running"))
		case *timeline != tli:
			problem = fmt.Sprintf("it follows timeline %d, not %d", *timeline, tli)
		case !caught:
			problem = fmt.Sprintf("it replayed up to %s, not %s", orElse(lsn, "nothing"), target)
		}
		if problem == "" {
			*took = time.Since(start).Round(time.Millisecond).String()
			return ""
		}
		if time.Since(start) > maxLag || ctx.Err() != nil {
			return problem + " after " + maxLag.String()
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// orElse is *s, or else when s is nil.
func orElse(s *string, alt string) string {
	if s == nil {
		return alt
	}
	return *s
}

// pitr checks a restore to a restore point: the node that serves (the
// restored one) has every ledger entry acknowledged before the point was
// made, and none whose operation began after it. Entries in flight at the
// point may be either way.
func pitr(ctx context.Context, c *experiments.PITR, run Run) Verdict {
	v := newVerdict(c.Type(), c.Workload)
	point, ok := run.RestorePoints[c.Point]
	if !ok {
		v.judge(false, "restore point %q was not made", c.Point)
		return v
	}
	v.Evidence["point"] = c.Point
	v.Evidence["point_made"] = point
	table := ledgerTable(run, c.Workload)
	var before, after []history.Op
	var keys []string
	for _, op := range opsOf(run.History, c.Workload) {
		k := opKey(op)
		switch {
		case k == "":
		case op.Outcome == history.OK && op.End.Before(point.Start):
			before = append(before, op)
			keys = append(keys, k)
		case op.Start.After(point.End):
			after = append(after, op)
			keys = append(keys, k)
		}
	}
	if len(before) == 0 {
		v.judge(false, "no entry was acknowledged before restore point %q: nothing to judge", c.Point)
		return v
	}
	present, err := ledgerPresent(ctx, run.VerifyDSN, table, keys)
	if err != nil {
		return failed(v.Type, c.Workload, err)
	}
	var missing, extra []string
	for _, op := range before {
		if !present[opKey(op)] {
			missing = append(missing, opKey(op))
		}
	}
	for _, op := range after {
		if present[opKey(op)] {
			extra = append(extra, opKey(op))
		}
	}
	e := v.Evidence
	e["acknowledged_before"] = len(before)
	e["begun_after"] = len(after)
	e["missing"] = len(missing)
	e["missing_keys"] = bounded(missing)
	e["after_the_point"] = len(extra)
	e["after_the_point_keys"] = bounded(extra)
	detail := fmt.Sprintf("%s, restored to %q, has %d of the %d entries acknowledged before the point and %d of the %d begun after it",
		run.Serving, c.Point, len(before)-len(missing), len(before), len(extra), len(after))
	v.judge(len(missing) == 0 && len(extra) == 0, "%s", detail)
	return v
}

// ledgerPresent reports which of keys are rows of a ledger table on dsn.
func ledgerPresent(ctx context.Context, dsn, table string, keys []string) (map[string]bool, error) {
	if !tableName.MatchString(table) {
		return nil, fmt.Errorf("ledger table %q is not a table name", table)
	}
	conn, err := connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer closeConn(ctx, conn)
	return presentKeys(ctx, conn, table, keys)
}
