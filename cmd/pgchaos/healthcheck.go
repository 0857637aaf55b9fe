package main

import (
	"context"
	"fmt"
	"io"
	"time"
)

const healthcheckUsage = `Usage:
  pgchaos healthcheck [--api ADDR] [--timeout 5s]

Exits 0 when the control API answers GET /healthz, 1 when it does not:
for a container's HEALTHCHECK, where the image has no shell or curl.
`

// runHealthcheck asks a running pgchaos's API whether it is up.
func runHealthcheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("pgchaos healthcheck", stderr, healthcheckUsage)
	api := addAPIFlags(fs)
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the answer")
	quiet := fs.BoolP("quiet", "q", false, "print nothing; the exit status says it")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return errUsage{fmt.Errorf("healthcheck: unexpected argument %q", fs.Arg(0))}
	}
	c, err := api.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	h, err := c.Health(ctx)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	if !*quiet {
		proxies := "proxies"
		if h.Proxies == 1 {
			proxies = "proxy"
		}
		fmt.Fprintf(stdout, "%s: %d %s, up %s\n", h.Status, h.Proxies, proxies, h.Uptime)
	}
	return nil
}
