// Package experiments reads chaos experiments: YAML files that say what to
// run against PostgreSQL (target, proxies, workloads), which faults to inject
// and when (method), and how to judge the outcome (steady state, verifiers).
//
// Parse checks a file completely and reports every problem with its file,
// line, column and field path, so that a runner can take the Experiment it
// returns as given: defaults are filled in and cross-references resolved.
package experiments

import (
	"strconv"
	"time"

	"github.com/pgchaos/pgchaos/faults"
)

// Experiment is one chaos experiment, as written in its file with defaults
// filled in.
type Experiment struct {
	// Source is the file the experiment was read from.
	Source      string
	Name        string
	Description string
	Tags        []string
	Target      Target
	// Proxies are pgchaos proxies started in-process or reached through a
	// running pgchaos's control API.
	Proxies []Proxy
	// Setup steps run once, in order, before the workloads start. Each has
	// a *RunSQL, *RunCommand or *Inject action (a fault in place before
	// the workloads' first statement).
	Setup       []Step
	Workloads   []Workload
	SteadyState SteadyState
	// During are checks made while the method runs: what must hold, or
	// must be seen, while the faults are in place.
	During []DuringProbe
	// Method is the ordered list of timed steps while the workloads run.
	Method   []Step
	Recovery Recovery
	// Verify holds the verifiers as written, followed by an implicit
	// FaultFired check for each injected rule that has no explicit one
	// (unless FaultFired is false).
	Verify []Verifier
	// Rollbacks always run, in order, at the end, even when an earlier
	// phase failed.
	Rollbacks []Step
	// FaultFired, true unless the file says fault_fired: false, adds a
	// fault_fired verifier for every injected rule.
	FaultFired bool
	// Explore configures pgchaos explore; nil when the file has no
	// explore section.
	Explore *Explore
}

// Fault kinds pgchaos explore tries at each fault point.
const (
	// KindCutAfter: the server runs the statement and the connection is
	// cut as its result comes back: the client never hears it (in doubt).
	KindCutAfter = "cut_after"
	// KindCutBefore: the connection is cut before the statement reaches
	// the server.
	KindCutBefore = "cut_before"
	// KindErrorAfter: the server runs the statement and the client is
	// told it failed, with each of Explore.SQLStatesAfter.
	KindErrorAfter = "error_after"
	// KindErrorBefore: the server never runs it; the client gets an error
	// with each of Explore.SQLStatesBefore.
	KindErrorBefore = "error_before"
	// KindHang: the statement is never answered, until the trial ends.
	KindHang = "hang"
	// KindDelay: the statement waits Explore.Delay, then goes on.
	KindDelay = "delay"
	// KindRefuse: a connection is refused (closed at once) — a point of
	// its own, per connection.
	KindRefuse = "refuse"
	// KindIdleCut: an idle session is cut between transactions, right
	// after the server said it is idle — a point of its own.
	KindIdleCut = "idle_cut"
)

// ExploreKinds are every fault kind, in the order explore tries them:
// in-doubt moments first, then errors, then connection faults and delays.
var ExploreKinds = []string{KindCutAfter, KindCutBefore, KindErrorAfter, KindErrorBefore,
	KindRefuse, KindIdleCut, KindHang, KindDelay}

// Explore is what pgchaos explore tries: each fault kind at each fault
// point the clean run shows, one per trial.
type Explore struct {
	// Proxy is the in-process proxy whose statements are the fault points
	// (default: the only one the workloads go through).
	Proxy string
	// Kinds are the fault kinds to try (default ExploreKinds).
	Kinds []string
	// SQLStatesBefore are error_before's SQLSTATEs (default 40001, 40P01,
	// 57P01 as FATAL, 08006) and SQLStatesAfter error_after's (default
	// 40001: the lie that invites a retry).
	SQLStatesBefore []string
	SQLStatesAfter  []string
	// Delay is the delay kind's wait (default 1s).
	Delay Duration
	// Deadline bounds each run of the workloads: one still running then
	// broke liveness (default 15s).
	Deadline Duration
	// Occurrences: how many occurrences of each point are tried, from the
	// first (default 1).
	Occurrences int
	// Budget bounds the whole exploration (default 10m); trials not
	// started by then are reported as skipped.
	Budget Duration
	Pos    Pos
}

// Defaults of an explore section.
var (
	DefaultSQLStatesBefore = []string{"40001", "40P01", "57P01", "08006"}
	DefaultSQLStatesAfter  = []string{"40001"}
)

const (
	DefaultExploreDelay    = Duration(time.Second)
	DefaultExploreDeadline = Duration(15 * time.Second)
	DefaultExploreBudget   = Duration(10 * time.Minute)
)

// Pos is where something is written in the experiment's file.
type Pos struct {
	Line, Column int
}

// Duration is a time.Duration written as "30s" or "500ms".
type Duration time.Duration

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText writes the duration as Parse reads it.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Target is the PostgreSQL the experiment runs against: given by DSNs, or
// started for the run (Embedded).
type Target struct {
	// DSN is where workloads connect ("direct"), and what the word target
	// means as a proxy's upstream. Empty with Embedded.
	DSN string
	// SetupDSN runs setup steps and VerifyDSN runs probes and verifiers;
	// both default to DSN.
	SetupDSN  string
	VerifyDSN string
	Embedded  *Embedded
	// Nodes are the servers of a cluster of the user's own, when given:
	// DSN then defaults to the primary's. Drill steps that stop or start
	// servers are the user's own exec commands there.
	Nodes []Node
}

// Node is a server of the user's own cluster.
type Node struct {
	Name string
	// Role is RolePrimary or RoleStandby at the start of the run.
	Role string
	DSN  string
	Pos  Pos
}

// Roles of a target node.
const (
	RolePrimary = "primary"
	RoleStandby = "standby"
)

// Embedded is a throwaway PostgreSQL started for the run, optionally with a
// PgBouncer in front of it.
type Embedded struct {
	PgBouncer bool
	// PoolMode is PgBouncer's pool_mode: session (default) or transaction.
	PoolMode string
	// PgBouncerVia names an in-process proxy (whose upstream is target)
	// through which PgBouncer connects to PostgreSQL, so that experiments
	// can cut the PgBouncer-to-PostgreSQL link. Empty: PgBouncer connects
	// directly.
	PgBouncerVia string
	// Settings are postgresql.conf parameters, of every node.
	Settings map[string]string
	// PgBouncerSettings are [pgbouncer] settings of the embedded PgBouncer.
	PgBouncerSettings map[string]string
	// Standbys is the number of streaming replicas started with the
	// primary, named standby1, standby2, ...
	Standbys int
	// Synchronous is how the primary waits for its standbys: SyncOff
	// (default), SyncOn or SyncQuorum.
	Synchronous string
	// Archive archives the WAL of every node to a local folder, for the
	// base_backup, restore_point and restore steps.
	Archive bool
	// ReplicationVia names an in-process proxy (whose upstream is the
	// primary) through which the standbys stream WAL, so that faults hit
	// the replication link. Empty: they connect directly.
	ReplicationVia string
}

// Nodes lists the embedded servers by name, the primary first.
func (e *Embedded) Nodes() []string {
	out := []string{NodePrimary}
	for i := 1; i <= e.Standbys; i++ {
		out = append(out, StandbyName(i))
	}
	return out
}

// NodePrimary is the name of the embedded target's first primary.
const NodePrimary = "primary"

// StandbyName is the name of the i-th standby (from 1).
func StandbyName(i int) string { return "standby" + strconv.Itoa(i) }

// Replication modes of an embedded cluster.
const (
	SyncOff = "off"
	// SyncOn: a commit waits for the first standby listed
	// (synchronous_standby_names FIRST 1).
	SyncOn = "on"
	// SyncQuorum: a commit waits for any one standby (ANY 1).
	SyncQuorum = "quorum"
)

// Pool modes of an embedded PgBouncer.
const (
	PoolSession     = "session"
	PoolTransaction = "transaction"
)

// Words a proxy's upstream may be instead of host:port.
const (
	// UpstreamTarget is the target server (the embedded PostgreSQL, or the
	// host and port of Target.DSN).
	UpstreamTarget = "target"
	// UpstreamPgBouncer is the embedded PgBouncer.
	UpstreamPgBouncer = "pgbouncer"
)

// Direct is the Workload.Through that bypasses every proxy.
const Direct = "direct"

// Proxy is a pgchaos proxy: started in-process (Listen, Upstream) or
// already running behind a control API (URL), or a set of running
// pgchaos instances that each have a proxy of this name (URLs, DNS),
// driven as one.
type Proxy struct {
	Name string
	// Listen defaults to 127.0.0.1:0 (any free port).
	Listen string
	// Upstream is host:port, UpstreamTarget or UpstreamPgBouncer.
	Upstream string
	// URL of a running pgchaos's control API, whose proxy of this Name is
	// used.
	URL string
	// URLs are the control APIs of a set of instances.
	URLs []string
	// DNS is host:port (or http(s)://host:port) whose every address, as
	// resolved when the run starts, is an instance's control API: a
	// Kubernetes headless Service's pods.
	DNS string
	Pos Pos
}

// Remote reports whether the proxy is reached through a control API rather
// than started in-process.
func (p Proxy) Remote() bool { return p.URL != "" || len(p.URLs) > 0 || p.DNS != "" }

// Set reports whether the proxy names a set of instances (URLs or DNS)
// rather than one.
func (p Proxy) Set() bool { return len(p.URLs) > 0 || p.DNS != "" }

// Workload types.
const (
	WorkloadLedger = "ledger"
	WorkloadBank   = "bank"
	WorkloadSQL    = "sql"
	WorkloadExec   = "exec"
)

// Workload is load that runs while the method does, recording every
// operation as ok, failed or unknown.
type Workload struct {
	Name string
	Type string
	// Clients is the number of concurrent clients (default 1).
	Clients int
	// Rate is operations per second over all clients (0: as fast as they go).
	Rate float64
	// Duration bounds the workload (0: the whole run).
	Duration Duration
	// Through is a proxy's name, Direct, or UpstreamPgBouncer (the
	// embedded PgBouncer, connected to directly).
	Through string
	// Exactly the options of Type are set.
	Ledger *LedgerOptions
	Bank   *BankOptions
	SQL    *SQLOptions
	Exec   *ExecOptions
	Pos    Pos
}

// LedgerOptions configure an append-only ledger whose every acknowledged
// insert must survive, and every insert reported failed must not.
type LedgerOptions struct {
	// Table defaults to pgchaos_ledger.
	Table string
	// TwoPhase writes each entry with PREPARE TRANSACTION and COMMIT
	// PREPARED.
	TwoPhase bool
}

// BankOptions configure transfers between accounts whose total must not
// change.
type BankOptions struct {
	Accounts       int   // default 10
	InitialBalance int64 // default 100
	// Isolation: read_committed (default), repeatable_read or serializable.
	Isolation string
}

// SQLOptions configure a workload of weighted statements.
type SQLOptions struct {
	Statements []Statement
	Retry      Retry
}

// Statement is one statement of a SQL workload.
type Statement struct {
	SQL string
	// Weight is its relative frequency (default 1).
	Weight int
	// Transaction wraps it in BEGIN ... COMMIT.
	Transaction bool
	Pos         Pos
}

// Retry says how often a failed statement is retried, and on which errors.
type Retry struct {
	Max int
	// On are SQLSTATEs worth a retry (default 40001 and 40P01).
	On []string
}

// ExecOptions configure a workload that is a command.
type ExecOptions struct {
	Command string
	Env     map[string]string
}

// SteadyState is what must hold before the method starts and again after
// recovery.
type SteadyState struct {
	Probes []Probe
}

// Probe is a query whose single value must meet Expect.
type Probe struct {
	Name   string
	SQL    string
	Expect Expect
	// Tolerance is how far a number may be from Expect.Equals.
	Tolerance float64
	Pos       Pos
}

// Expect is what a query's value must be: equal to Equals (when HasEquals),
// and within Min and Max when they are set.
type Expect struct {
	// Equals is a string, int, float64, bool or nil.
	Equals    any
	HasEquals bool
	Min, Max  *float64
}

// When a during probe runs.
const (
	// WhileMethod: every Every from the start of the method to its end.
	WhileMethod = "method"
	// WhileFault: every Every while an injected fault is in place.
	WhileFault = "fault"
	// WhileSteps: once after each method step.
	WhileSteps = "steps"
)

// What a during probe's samples must show.
const (
	// MustAlways: every sample meets Expect (the system holds under the
	// fault).
	MustAlways = "always"
	// MustOnce: some sample meets it (the fault's effect was seen, e.g.
	// clients stalled behind a hang before recovery released them).
	MustOnce = "once"
)

// DuringProbe is a query sampled while the method runs, judged as a
// verifier when the run ends.
type DuringProbe struct {
	Probe
	While string   // WhileMethod (default), WhileFault or WhileSteps
	Every Duration // default 1s; not for WhileSteps
	Must  string   // MustAlways (default) or MustOnce
}

// DefaultDuringEvery is how often a during probe samples.
const DefaultDuringEvery = Duration(time.Second)

// Step is one step of the setup, the method or the rollbacks.
type Step struct {
	Name string
	// At is the offset from the start of the method at which the step
	// starts; nil when not given.
	At *Duration
	// After is a wait before the step.
	After  Duration
	Action Action
	Pos    Pos
}

// Action is what a step does: *Inject, *Remove, *Wait, *RunSQL,
// *RunCommand, *KillSessions, *SwitchUpstream, *PauseWorkload,
// *ResumeWorkload, *WaitWorkloads, *ResolvePrepared, or a drill step on an embedded
// node: *Crash, *Start, *Promote, *Rewind, *WaitFor, *PauseReplay,
// *ResumeReplay, *BaseBackup, *RestorePoint or *Restore; or *PgBouncer.
type Action interface {
	// Kind is the action's key in the file, e.g. "inject".
	Kind() string
}

// Inject adds a fault rule, and removes it after Duration when that is set.
type Inject struct {
	Rule     faults.Rule
	Duration Duration
}

// Remove removes a rule injected by an earlier step.
type Remove struct{ Rule string }

// Wait does nothing for a while.
type Wait struct{ Duration Duration }

// RunSQL runs statements on DSN, or on an embedded Node (default: the
// target's setup DSN in setup, its DSN elsewhere).
type RunSQL struct{ SQL, DSN, Node string }

// RunCommand runs a shell command.
type RunCommand struct {
	Command string
	// Timeout defaults to 60s.
	Timeout Duration
}

// KillSessions ends a proxy's sessions, all of them or those of an
// application_name (a regular expression) and user.
type KillSessions struct{ Proxy, ApplicationName, User string }

// SwitchUpstream points a proxy at another upstream (host:port,
// UpstreamTarget, UpstreamPgBouncer or an embedded node's name).
type SwitchUpstream struct{ Proxy, Upstream string }

// PauseWorkload stops a workload's clients until ResumeWorkload.
type PauseWorkload struct{ Workload string }

// ResumeWorkload resumes a paused workload.
type ResumeWorkload struct{ Workload string }

// WaitWorkloads waits until Workloads (default: every workload) have
// finished — an exec's command exited, a workload's duration ran out —
// and fails after Timeout: an application that does not finish in time
// is not live.
type WaitWorkloads struct {
	Workloads []string
	Timeout   Duration
}

// Policies for resolving prepared transactions.
const (
	PolicyCommit   = "commit"
	PolicyRollback = "rollback"
	// PolicyHistory decides each transaction from the workload's history.
	PolicyHistory = "history"
)

// ResolvePrepared commits or rolls back prepared transactions whose gid
// starts with GIDPrefix.
type ResolvePrepared struct{ GIDPrefix, Policy string }

// Ways a crash step stops a node.
const (
	// CrashKill: SIGKILL to the postmaster and every process it forked.
	CrashKill = "kill"
	// CrashImmediate and CrashFast: pg_ctl stop's shutdown modes.
	CrashImmediate = "immediate"
	CrashFast      = "fast"
)

// Crash stops an embedded node as a failure would.
type Crash struct{ Node, Mode string }

// Start starts a crashed or stopped node again, on the same port.
type Start struct{ Node string }

// Promote makes a standby the primary: from then on it is the node that
// serves, where setup-style sql steps, probes and verifiers connect. With
// Wait, the step ends once it accepts writes.
type Promote struct {
	Node string
	Wait bool
}

// Rewind makes Node, a former primary, a standby of Source with pg_rewind,
// and starts it.
type Rewind struct{ Node, Source string }

// WaitFor polls a query on a node (default: the one that serves) until
// its value meets Expect, and fails after Timeout.
type WaitFor struct {
	SQL, Node string
	Expect    Expect
	Timeout   Duration
}

// PauseReplay pauses WAL replay on a standby (pg_wal_replay_pause).
type PauseReplay struct{ Node string }

// ResumeReplay resumes it.
type ResumeReplay struct{ Node string }

// BaseBackup takes a base backup of an embedded node (default: the one
// that serves), for a later restore.
type BaseBackup struct{ Node string }

// RestorePoint marks a point to restore to: a named restore point on the
// node that serves, whose WAL is then switched so that it is archived.
type RestorePoint struct{ Name string }

// Restore recovers the latest base backup and the archived WAL up to a
// restore point as a new node, Node, which then serves.
type Restore struct{ Point, Node string }

// PgBouncer runs a command on the embedded PgBouncer's admin console
// (Command, for Database or all), or points its [databases] at Upstream
// and reloads it, as a failover runbook does.
type PgBouncer struct {
	Command, Database string
	Upstream          string
}

// PgBouncer admin commands a pgbouncer step may run.
var PgBouncerCommands = []string{"RECONNECT", "RELOAD", "PAUSE", "RESUME"}

func (*PgBouncer) Kind() string    { return "pgbouncer" }
func (*BaseBackup) Kind() string   { return "base_backup" }
func (*RestorePoint) Kind() string { return "restore_point" }
func (*Restore) Kind() string      { return "restore" }
func (*Crash) Kind() string        { return "crash" }
func (*Start) Kind() string        { return "start" }
func (*Promote) Kind() string      { return "promote" }
func (*Rewind) Kind() string       { return "rewind" }
func (*WaitFor) Kind() string      { return "wait_for" }
func (*PauseReplay) Kind() string  { return "pause_replay" }
func (*ResumeReplay) Kind() string { return "resume_replay" }

func (*Inject) Kind() string          { return "inject" }
func (*Remove) Kind() string          { return "remove" }
func (*Wait) Kind() string            { return "wait" }
func (*RunSQL) Kind() string          { return "sql" }
func (*RunCommand) Kind() string      { return "exec" }
func (*KillSessions) Kind() string    { return "kill_sessions" }
func (*SwitchUpstream) Kind() string  { return "switch_upstream" }
func (*PauseWorkload) Kind() string   { return "pause_workload" }
func (*ResumeWorkload) Kind() string  { return "resume_workload" }
func (*ResolvePrepared) Kind() string { return "resolve_prepared" }
func (*WaitWorkloads) Kind() string   { return "wait_workloads" }

// Recovery is the phase after the method: every fault is removed and the
// steady state must hold again within Deadline (default 60s).
type Recovery struct {
	Deadline Duration
}

// Verifier is one judgement of the run.
type Verifier struct {
	// Name defaults to the check's type.
	Name  string
	Check Check
	// Implicit marks a fault_fired check that the file did not write.
	Implicit bool
	Pos      Pos
}

// Check is what a verifier checks: *Durability, *BankInvariant,
// *PreparedTransactions, *SQLCheck, *SQLEqual, *RecoveryTime,
// *Availability, *Latency, *ErrorCount, *FaultFired, *Sessions, *RPO,
// *RTO, *Timeline, *Replication or *PITR.
type Check interface {
	// Type is the verifier's type in the file, e.g. "durability".
	Type() string
}

// Durability checks a ledger workload: acknowledged entries missing from
// the table are lost; entries the client was told failed yet present are
// ghosts.
type Durability struct {
	Workload     string
	AllowedLost  int
	AllowedGhost int
}

// BankInvariant checks that a bank workload's total balance is unchanged.
type BankInvariant struct{ Workload string }

// PreparedTransactions checks pg_prepared_xacts for transactions whose gid
// starts with GIDPrefix and that are older than OlderThan: none may be left,
// or, with ExpectInDoubt, at least one must be (the fault did leave one in
// doubt).
type PreparedTransactions struct {
	GIDPrefix     string
	OlderThan     Duration
	ExpectInDoubt bool
}

// SQLCheck runs a query on DSN (default: the verify DSN) and checks its
// value, or that it returns no rows.
type SQLCheck struct {
	SQL          string
	DSN          string
	Expect       Expect
	ExpectNoRows bool
}

// SQLEqual checks that two queries return the same rows.
type SQLEqual struct {
	Left, Right string
	DSN         string
}

// RecoveryTime checks that the steady state came back within Max of the
// faults being healed.
type RecoveryTime struct{ Max Duration }

// Windows of a run that availability and latency are judged over.
const (
	// WindowFault is from the first fault injected until recovery starts.
	WindowFault = "fault"
	// WindowRun is the whole time the workload ran.
	WindowRun = "run"
)

// Availability checks the share of a workload's operations that succeeded.
type Availability struct {
	Workload   string
	MinOKRatio float64
	Window     string // default WindowFault
}

// Latency checks a workload's latency: the 99th percentile at most P99Max
// (the fault did not slow it too much) and the median at least P50Min (the
// fault did slow it). A zero bound is not checked; at least one is given.
type Latency struct {
	Workload string
	P99Max   Duration
	P50Min   Duration
	Window   string // default WindowFault
}

// ErrorCount counts the errors a workload's clients were told — operations
// that failed or ended unknown, and every attempt that failed and was
// retried — of SQLState ("": any) in the window: at least Min (the fault
// reached the workload), at most Max when it is set.
type ErrorCount struct {
	Workload string
	SQLState string
	Min      int
	Max      *int
	Window   string // default WindowFault
}

// FaultFired checks that a rule fired at least Min times (default 1).
type FaultFired struct {
	Rule string
	Min  int
}

// Sessions checks the target's sessions after the run.
type Sessions struct {
	// NoIdleInTransaction: no session is left idle in transaction
	// (default true).
	NoIdleInTransaction bool
	// NoWaitingClients: no client is waiting for a server connection in
	// PgBouncer or on a lock (default true).
	NoWaitingClients bool
}

// RPO checks a ledger workload after a drill: acknowledged entries missing
// on the node that serves are lost, at most MaxLost of them (default 0),
// acknowledged over at most MaxWindow (0: not checked).
type RPO struct {
	Workload  string
	MaxLost   int
	MaxWindow Duration
}

// RTO measures, per workload, how long writes (and reads, for a sql
// workload's SELECTs) were down: from the start of a fault step (inject or
// crash) to the first acknowledgement after it. The step is the method
// step named From (any kind: on your own cluster, the exec that stops a
// server), or else the inject or crash that began the outage: the last to
// start before the workload's first failure. At most Max when it is set.
type RTO struct {
	Workload string
	Max      Duration
	From     string
}

// Timeline checks an embedded cluster after a drill: the timeline of the
// node that serves advanced past the one the method began on when a
// standby was promoted (and stayed when none was), no other running node
// accepts writes, and no acknowledged ledger write is only on another
// node after the promotion (split brain).
type Timeline struct{}

// Replication checks an embedded cluster's standbys after a drill: each
// of Standbys (default: every node but the one that serves) streams from
// the serving node, on its timeline, and replays up to the serving node's
// WAL position of the check within MaxLag (default 10s).
type Replication struct {
	Standbys []string
	MaxLag   Duration
}

// PITR checks a ledger workload after a restore to a restore point: every
// entry acknowledged before the point is there, and none begun after it.
type PITR struct{ Workload, Point string }

func (*PITR) Type() string                 { return "pitr" }
func (*Timeline) Type() string             { return "timeline" }
func (*Replication) Type() string          { return "replication" }
func (*RPO) Type() string                  { return "rpo" }
func (*RTO) Type() string                  { return "rto" }
func (*Durability) Type() string           { return "durability" }
func (*BankInvariant) Type() string        { return "bank_invariant" }
func (*PreparedTransactions) Type() string { return "prepared_transactions" }
func (*SQLCheck) Type() string             { return "sql" }
func (*SQLEqual) Type() string             { return "sql_equal" }
func (*RecoveryTime) Type() string         { return "recovery_time" }
func (*Availability) Type() string         { return "availability" }
func (*Latency) Type() string              { return "latency" }
func (*ErrorCount) Type() string           { return "errors" }
func (*FaultFired) Type() string           { return "fault_fired" }
func (*Sessions) Type() string             { return "sessions" }
