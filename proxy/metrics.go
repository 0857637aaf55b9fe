package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the data plane's Prometheus metrics. One value serves every
// proxy in a process; each series carries the proxy's name. The registry is
// passed in so that tests and embedders keep their own.
type Metrics struct {
	sessionsActive  *prometheus.GaugeVec
	sessionsTotal   *prometheus.CounterVec
	messages        *prometheus.CounterVec
	bytes           *prometheus.CounterVec
	connectFailures *prometheus.CounterVec
	protocolErrors  *prometheus.CounterVec
	cancelRequests  *prometheus.CounterVec
	sessionDuration *prometheus.HistogramVec
	delayLateness   *prometheus.HistogramVec
	rejected        *prometheus.CounterVec
	startupTimeouts *prometheus.CounterVec
	connectLatency  *prometheus.HistogramVec
}

// NewMetrics creates the metrics and registers them with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		sessionsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pgchaos_sessions_active", Help: "Client sessions currently relayed.",
		}, []string{"proxy"}),
		sessionsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgchaos_sessions_total", Help: "Client sessions relayed since start.",
		}, []string{"proxy"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgchaos_messages_total", Help: "Protocol messages relayed, by direction and message type.",
		}, []string{"proxy", "direction", "type"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgchaos_bytes_total", Help: "Bytes of protocol messages relayed, by direction and message type.",
		}, []string{"proxy", "direction", "type"}),
		connectFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgchaos_upstream_connect_failures_total", Help: "Failed attempts to connect to the upstream.",
		}, []string{"proxy"}),
		protocolErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgchaos_protocol_errors_total", Help: "Sessions closed because a peer broke the wire protocol.",
		}, []string{"proxy"}),
		cancelRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgchaos_cancel_requests_total", Help: "CancelRequests forwarded to the upstream.",
		}, []string{"proxy"}),
		sessionDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pgchaos_session_duration_seconds",
			Help:    "How long client sessions lasted.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 12),
		}, []string{"proxy"}),
		delayLateness: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pgchaos_fault_delay_lateness_seconds",
			Help:    "How much later than intended a delayed message was forwarded (arrival + delay).",
			Buckets: []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.005, 0.01, 0.05},
		}, []string{"proxy"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgchaos_clients_rejected_total",
			Help: "Clients turned away by pgchaos's own limits: max_sessions (--max-sessions reached) or out_of_fds (no file descriptor left, or only those kept for the control API).",
		}, []string{"proxy", "reason"}),
		startupTimeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgchaos_startup_timeouts_total", Help: "Clients closed because they did not finish the startup phase within --startup-timeout.",
		}, []string{"proxy"}),
		connectLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pgchaos_upstream_connect_seconds",
			Help:    "How long connecting to the upstream took, for sessions and forwarded CancelRequests: the TCP connect, and with upstream TLS the SSLRequest and the handshake. Successful connects only; a slow_connect fault's wait is before it, not in it.",
			Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		}, []string{"proxy"}),
	}
	if reg != nil {
		for _, v := range m.vecs() {
			reg.MustRegister(v)
		}
	}
	return m
}

// metricVec is one of the metrics: every series of it carries a proxy.
type metricVec interface {
	prometheus.Collector
	DeletePartialMatch(prometheus.Labels) int
}

// vecs lists the metrics once, for registering and for forgetting.
func (m *Metrics) vecs() []metricVec {
	return []metricVec{m.sessionsActive, m.sessionsTotal, m.messages, m.bytes,
		m.connectFailures, m.protocolErrors, m.cancelRequests, m.sessionDuration, m.delayLateness,
		m.rejected, m.startupTimeouts, m.connectLatency}
}

// Forget drops every series of the named proxy, once it is gone: a
// process that creates and deletes proxies keeps no series, and no
// memory, for the deleted ones.
func (m *Metrics) Forget(proxy string) {
	match := prometheus.Labels{"proxy": proxy}
	for _, v := range m.vecs() {
		v.DeletePartialMatch(match)
	}
}

// proxyMetrics are one proxy's series, resolved once so that the hot path
// indexes an array instead of hashing label values per message.
type proxyMetrics struct {
	msgs            [2][256]prometheus.Counter
	bytes           [2][256]prometheus.Counter
	active          prometheus.Gauge
	total           prometheus.Counter
	connectFailures prometheus.Counter
	protocolErrors  prometheus.Counter
	cancels         prometheus.Counter
	duration        prometheus.Observer
	delayLateness   prometheus.Observer
	tooMany         prometheus.Counter
	outOfFDs        prometheus.Counter
	startupTimeouts prometheus.Counter
	connectLatency  prometheus.Observer
}

func (m *Metrics) forProxy(name string) *proxyMetrics {
	pm := &proxyMetrics{
		active:          m.sessionsActive.WithLabelValues(name),
		total:           m.sessionsTotal.WithLabelValues(name),
		connectFailures: m.connectFailures.WithLabelValues(name),
		protocolErrors:  m.protocolErrors.WithLabelValues(name),
		cancels:         m.cancelRequests.WithLabelValues(name),
		duration:        m.sessionDuration.WithLabelValues(name),
		delayLateness:   m.delayLateness.WithLabelValues(name),
		tooMany:         m.rejected.WithLabelValues(name, "max_sessions"),
		outOfFDs:        m.rejected.WithLabelValues(name, "out_of_fds"),
		startupTimeouts: m.startupTimeouts.WithLabelValues(name),
		connectLatency:  m.connectLatency.WithLabelValues(name),
	}
	for _, d := range []Direction{ClientToServer, ServerToClient} {
		unknownMsgs := m.messages.WithLabelValues(name, d.String(), "unknown")
		unknownBytes := m.bytes.WithLabelValues(name, d.String(), "unknown")
		for t := range 256 {
			typ := byte(t)
			if n, ok := messageNames[d][typ]; ok {
				pm.msgs[d][typ] = m.messages.WithLabelValues(name, d.String(), n)
				pm.bytes[d][typ] = m.bytes.WithLabelValues(name, d.String(), n)
			} else {
				pm.msgs[d][typ] = unknownMsgs
				pm.bytes[d][typ] = unknownBytes
			}
		}
	}
	return pm
}

func (pm *proxyMetrics) count(d Direction, typ byte, size int) {
	pm.msgs[d][typ].Inc()
	pm.bytes[d][typ].Add(float64(size))
}
