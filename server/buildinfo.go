package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgchaos/pgchaos/internal/buildinfo"
)

// registerBuildInfo adds pgchaos_build_info, always 1, whose labels say
// which build serves: dashboards join on it, and alerts catch a fleet
// running mixed versions.
func registerBuildInfo(reg prometheus.Registerer) {
	info := buildinfo.Get()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "pgchaos_build_info",
		Help:        "Always 1; the labels say which pgchaos build is running.",
		ConstLabels: prometheus.Labels{"version": info.Version, "commit": info.Commit, "goversion": info.GoVersion},
	})
	g.Set(1)
	reg.MustRegister(g)
}
